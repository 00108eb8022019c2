// The `jobs` scenario of doppel-bench: a desired patch rolled out by one job to many twins
// (default 100,000, registered through the broker) whose devices answer. The devices are a few
// MQTT connections that share a subscription to twins/+/delta and report each delta back for
// its twin (100,000 sockets would exceed loopback's ports). Figures: the create call (target
// resolved and stored), executions per second until every twin converged (the rate limit set
// far above it), and an operator's PATCH -> delta at a device under background ingest: without a
// job, while that job runs, and while a second job paced at 1,000 twins/s runs. Also the
// `contention` scenario (below).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct JobsBenchOptions {
  std::string doppeld;
  std::string work_dir;
  std::vector<std::string> gateway_args;
  uint64_t twins = 100'000;
  int connections = 2;            // registration publishers
  int responders = 4;             // device connections answering deltas
  double background_rate = 2000;  // updates/s of other twins during the latency phases
  double patch_rate = 20;         // operator PATCHes/s, latency probe
  double probe_seconds = 5;       // latency probe without a job, and with the paced one
  double paced_rate = 1000;       // rate_per_s of the second, paced rollout
};

json run_jobs_bench(const JobsBenchOptions& options);

// The `contention` scenario: what one client's expensive reads cost everyone else. An operator's
// PATCH -> delta p99 without jobs and while `jobs` continuous jobs with unindexed target queries
// rescan the fleet (the ratio; target <= 2), and the change feed's JSON page (and a history read)
// alone and while `scanners` clients loop full-scan fleet queries (target p99 <= 50 ms).
struct ContentionBenchOptions {
  std::string doppeld;
  std::string work_dir;
  std::vector<std::string> gateway_args;
  uint64_t twins = 100'000;
  int connections = 2;
  int jobs = 20;
  int scanners = 8;
  double patch_rate = 20;
  double probe_seconds = 10;
};

json run_contention_bench(const ContentionBenchOptions& options);

}  // namespace doppel::bench
