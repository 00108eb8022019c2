// doppel-bench's harness (bench_main.cc) and the scenarios it runs, one file each: ceiling, ingest
// and baseline in throughput.cc, latency.cc, memory.cc (memory and restart), alarms.cc,
// overload.cc; feed, query, jobs, contention and api have their own options and run_... function
// (feed.h, query.h, jobs.h, api.h), which Bench calls with the command line's sizes. A scenario
// starts its own Mosquitto (and doppeld) on loopback, is bounded in time, prints progress and a
// table, and returns its figures as JSON ({"ok": false, "error": ...} when it could not measure).
#pragma once

#include <signal.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "simulator/bench/bench_util.h"
#include "simulator/bench/load.h"
#include "simulator/local_postgres.h"

namespace doppel::bench {

// The command line: which scenarios, and the sizes of each.
struct BenchOptions {
  std::vector<std::string> scenarios;
  bool quick = false;
  std::string out;
  std::string doppeld;
  std::string work_dir;
  bool keep = false;
  uint64_t messages = 300'000;
  uint64_t devices = 1000;
  int connections = 2;
  double patch_rate = 100;
  double latency_seconds = 10;
  double background_rate = 10'000;
  uint64_t memory_twins = 1'000'000;
  uint64_t hot_twins = 100'000;
  uint64_t alarm_twins = 1'000'000;
  uint64_t query_twins = 1'000'000;
  uint64_t console_twins = 1'000'000;
  uint64_t job_twins = 100'000;
  double alarm_window_s = 120;  // the deadlines are spread over this long (0: as fast as possible)
  double alarm_after_s = 0;     // staleness window; 0: window + 30 s, so all are armed at once
  uint64_t restart_overdue = 1000;
  uint64_t overload_queue = 200'000;  // the broker's max_queued_messages in the overload scenario
  double api_seconds = 5;             // api: per wrk run
  int api_idle = 5000;                // api: idle connections held open
  int shards = 0;
  std::vector<std::string> doppeld_args;  // extra arguments for every doppeld
  double feed_rate = 10'000;              // feed: device updates/s during the measurement
  double feed_seconds = 10;               // feed: per phase
  // "postgres": the scenarios that exercise the store run twice, on SQLite and on a private
  // PostgreSQL server (started by the bench on this machine), and report PostgreSQL's figures as
  // ratios to SQLite's.
  std::string store = "sqlite";
};

// Set by SIGINT/SIGTERM: every scenario stops early and reports what it has.
extern volatile sig_atomic_t g_interrupted;

// Polls `value` until it reaches `target`, printing progress; returns the seconds it took from
// `t0` (or -1 when it stalls for `stall_s` or is interrupted).
double wait_for_count(const std::string& label, Clock::time_point t0, uint64_t target,
                      const std::function<uint64_t()>& value, double stall_s = 20);

class Bench;

// Every scenario, in the default order: its name, what runs it and its --help line(s). The one
// list: the default set, the names --scenarios accepts, the dispatch and the help come from it.
struct Scenario {
  const char* name;
  json (Bench::*run)();
  bool by_default;
  const char* help;
};
const Scenario* find_scenario(const std::string& name);

class Bench {
 public:
  explicit Bench(BenchOptions o);
  // Runs the scenarios asked for, writes the JSON after each, prints the summary; 0 if all
  // measured what they should.
  int run();
  static const std::vector<Scenario>& scenarios();

 private:
  // ---- throughput.cc: the raw limit, ingest through doppeld, the read-merge-write baseline ----
  json ceiling();
  json ceiling_run(int qos, const std::string& key);
  json ingest();
  json ingest_run(int run, twins::Dialect dialect = twins::Dialect::kDoppel,
                  std::vector<std::string> extra_args = {});
  // Ingest from AWS-dialect devices against Doppel's own, alternating, same transport (aws.cc).
  json aws();
  json baseline();
  json baseline_run(int run);
  // Repetitions of ceiling, ingest and baseline (the best counts): 3, or 1 in quick mode.
  int runs() const { return o_.quick ? 1 : 3; }
  // The best of `runs` runs of `one` by `key`, with every run's figure.
  json best_of(int runs, const std::string& key, const std::function<json(int)>& one);
  static double median(const json& runs);
  static std::string ratio_text(const json& ingest);

  // ---- latency.cc: PATCH -> delta at the device, under background ingest ----
  json latency();

  // ---- memory.cc: RSS per hibernated and per hot twin; restart to /readyz ----
  json memory();
  json restart();
  static double ready_ms(const json& seconds);
  static std::string bound(double ms);

  // ---- alarms.cc: N deadlines spread over a window; lateness and early firing ----
  json alarms();

  // ---- overload.cc: the rate doppeld sustains, and how long a burst above it may last ----
  json overload();

  // ---- bench_main.cc: the scenarios with their own options (feed.h, query.h, jobs.h, api.h) ----
  json feed();
  json query();
  json jobs();
  json contention();
  json console();
  json cluster();
  json api();

  // ---- bench_main.cc: the same scenario on PostgreSQL (--store postgres) ----
  // Whether --store postgres runs scenario `name` a second time.
  static bool store_scenario(const std::string& name);
  // Runs `name` on the private PostgreSQL (in <work dir>/postgres), with the server's CPU time
  // and WAL bytes, and its figures as ratios to `on_sqlite`'s.
  json on_postgres(const Scenario& scenario, const json& on_sqlite);
  std::unique_ptr<sim::LocalPostgres> postgres_;
  std::map<std::string, std::string> databases_;  // data directory -> its database's URI

  // ---- bench_main.cc: helpers every scenario uses ----
  // A fresh work directory for `name` under --work-dir.
  std::string dir(const std::string& name);
  void save();
  // doppeld's arguments: `extra`, then --shards and --doppeld-arg from the command line.
  std::vector<std::string> gateway_args(std::vector<std::string> extra) const;
  LoadOptions load(int port, uint64_t messages, uint64_t devices, int qos,
                   const std::string& prefix = "bench-") const;
  // Whether doppeld's --help lists `flag` (to run older binaries for before/after figures).
  bool doppeld_has_flag(const std::string& flag) const;
  json fail(const Status& s);
  json fail_log(const std::string& what, const Gateway& gw);
  void summary();

  BenchOptions o_;
  json result_;
  double ceiling_qos1_ = 0;
  double ceiling_qos1_median_ = 0;
  double ingest_rate_ = 0;
  std::string memory_data_;
  std::string memory_broker_dir_;
};

}  // namespace doppel::bench
