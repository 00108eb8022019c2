// The `query` scenario of doppel-bench: fleet queries over many twins (default 1,000,000,
// registered through the broker like a real fleet): the first page of an indexed equality
// (--index reported.battery, 1% of the fleet), the first page of a state index, a count grouped
// by liveness state, and unindexed full scans; then what an expression index costs per write:
// store time per committed write under the same updates, before and after two more indexes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct QueryBenchOptions {
  std::string doppeld;
  std::string work_dir;
  std::vector<std::string> gateway_args;
  uint64_t twins = 1'000'000;
  int connections = 2;
  int page_reads = 200;        // per first-page figure
  int count_reads = 5;         // per count / scan figure
  uint64_t updates = 100'000;  // per index-cost run
};

json run_query_bench(const QueryBenchOptions& options);

}  // namespace doppel::bench
