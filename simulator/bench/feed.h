// The `feed` scenario of doppel-bench: how long a committed change takes to reach a change-feed
// subscriber (GET /v1/events as Server-Sent Events) while devices report at a fixed rate — with
// one unfiltered subscriber, and with many subscribers each filtered to a few twins. Latency is
// the subscriber's receive time minus the event's `ts` (the shard's clock when it made the change,
// before the commit): commit plus delivery, in milliseconds.
#pragma once

#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct FeedBenchOptions {
  std::string doppeld;
  std::string work_dir;
  std::vector<std::string> gateway_args;
  double rate = 10'000;  // device updates per second
  double seconds = 10;   // per phase
  uint64_t devices = 1000;
  int connections = 2;  // publisher connections
  int filtered = 100;   // subscribers in the second phase, each to `twins_each` twins
  int twins_each = 3;
};

json run_feed_bench(const FeedBenchOptions& options);

}  // namespace doppel::bench
