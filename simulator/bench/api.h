// The `api` scenario of doppel-bench: the HTTP front end under wrk (Debian's HTTP load generator).
// GET twin and PATCH desired at 1, 64 and 1,024 keep-alive connections, each reported as a ratio to
// the server's own floor — GET /healthz at the same concurrency, in the same run — then again with
// thousands of idle connections held open, and the memory each idle connection costs. wrk's own
// CPU is measured alongside, as the ingest scenario does for its load generator.
#pragma once

#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct ApiBenchOptions {
  std::string doppeld;
  std::string work_dir;  // broker, database and wrk scripts go here
  std::vector<std::string> gateway_args;
  double seconds = 5;     // per measurement
  uint64_t twins = 1000;  // provisioned, then read and patched round-robin
  std::vector<int> concurrency = {1, 64, 1024};
  int idle_connections = 5000;  // held open (from ten loopback addresses) in the idle phase
  int idle_concurrency = 64;    // the load measured while they are open
  int stream_readers = 100;     // streaming: readers of GET /v1/debug/ticks at their own pace
  bool https = true;            // also GET twin over HTTPS (needs openssl and curl)
};

// Runs the scenario; {"ok": false, "error": ...} when something does not add up.
json run_api_bench(const ApiBenchOptions& options);

}  // namespace doppel::bench
