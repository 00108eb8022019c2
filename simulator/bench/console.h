// The `console` scenario of doppel-bench: the web console in Chromium over many twins (default
// 1,000,000, registered through the broker): the time from opening the fleet page to its first
// table and to its counts, the console's bytes on the wire for a first load, and report -> DOM
// latency with 10 twins on screen that get 100 reports/s between them (each changes a value). The
// browser side is tests/console/measure.mjs (node, puppeteer-core, Debian's chromium).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"

namespace doppel::bench {

struct ConsoleBenchOptions {
  std::string doppeld;
  std::string script;  // tests/console/measure.mjs
  std::string work_dir;
  std::vector<std::string> gateway_args;
  uint64_t twins = 1'000'000;
  int connections = 2;
  int live_twins = 10;     // on screen
  double live_rate = 100;  // reports/s to them, in all
  double live_seconds = 20;
  int loads = 5;  // first loads measured
};

json run_console_bench(const ConsoleBenchOptions& options);

}  // namespace doppel::bench
