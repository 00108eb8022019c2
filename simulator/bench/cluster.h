// The `cluster` scenario of doppel-bench (issue #22, docs/scale-out.md): doppelds in cluster mode
// on one private PostgreSQL server and one Mosquitto, with 1, 2 and 3 nodes on this machine —
// ingest (every report committed) and PATCH desired throughput through every node, each as a
// ratio to one node (the nodes share this machine's cores with each other, PostgreSQL and the
// load, so the ratios say what a node costs here, not what more machines would give), a job's
// rollout over every twin (executions per second, most sent by the job's node to the twins'
// owners) — and the
// takeover window: how long a twin of a node killed with SIGKILL could not be served (from the
// kill to the first 200 through another node), p50/p99 over `kills` kills.
#pragma once

#include <cstdint>
#include <string>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct ClusterBenchOptions {
  std::string doppeld;
  std::string work_dir;
  int max_nodes = 3;
  double lease_s = 5;  // --lease-s (doppeld's default): the takeover window is about one lease
  uint64_t messages = 60'000;
  uint64_t devices = 1000;
  int connections = 2;
  int api_clients = 16;
  double api_seconds = 3;
  int twins = 300;  // PATCHed by the API clients
  int kills = 10;
};

json run_cluster_bench(const ClusterBenchOptions& options);

}  // namespace doppel::bench
