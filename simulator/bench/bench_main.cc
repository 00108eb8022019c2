// doppel-bench: measures Doppel against the limits of the machine it runs on (DESIGN §10). The
// harness: the command line, the scenario table, the run loop and summary, the helpers every
// scenario uses (bench.h), and the scenarios that have their own options files. Every scenario
// starts its own Mosquitto (and doppeld) on loopback, is bounded in time, prints progress and a
// table, and adds its figures to one JSON result (--out).
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "git_commit.h"  // generated: DOPPEL_GIT_COMMIT
#include "mqtt/client.h"
#include "simulator/bench/api.h"
#include "simulator/bench/bench.h"
#include "simulator/bench/bench_util.h"
#include "simulator/bench/cluster.h"
#include "simulator/bench/console.h"
#include "simulator/bench/feed.h"
#include "simulator/bench/jobs.h"
#include "simulator/bench/query.h"
#include "simulator/local_broker.h"

namespace fs = std::filesystem;

namespace {

using namespace doppel::bench;

// Hidden mode "count-subscriber URI QOS FILE": a do-nothing Paho subscriber to twins/+/reported
// that keeps the number of messages received in FILE, until SIGTERM.
int count_subscriber(const std::string& uri, int qos, const std::string& file) {
  doppel::mqtt::ClientOptions o;
  o.uri = uri;
  o.client_id = "ceiling-subscriber";
  doppel::mqtt::Client client(o);
  std::atomic<uint64_t> count{0};
  client.on_message(
      [&](doppel::mqtt::IncomingMessage&&) { count.fetch_add(1, std::memory_order_relaxed); });
  if (!client.connect(std::chrono::seconds(10)) || !client.subscribe({"twins/+/reported"}, qos)) {
    return 1;
  }
  const std::string tmp = file + ".tmp";
  while (!g_interrupted) {
    { std::ofstream(tmp) << count.load() << "\n"; }
    fs::rename(tmp, file);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}
void on_signal(int) { g_interrupted = 1; }

std::string now_utc() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace

namespace doppel::bench {

using doppel::sim::LocalBroker;

volatile sig_atomic_t g_interrupted = 0;

double wait_for_count(const std::string& label, Clock::time_point t0, uint64_t target,
                      const std::function<uint64_t()>& value, double stall_s) {
  uint64_t last = 0;
  auto last_progress = Clock::now();
  auto next_print = Clock::now() + std::chrono::seconds(1);
  while (!g_interrupted) {
    const uint64_t v = value();
    if (v >= target) return seconds_since(t0);
    if (v != last) {
      last = v;
      last_progress = Clock::now();
    } else if (seconds_since(last_progress) > stall_s) {
      std::printf("  [%s] stalled at %llu/%llu\n", label.c_str(),
                  static_cast<unsigned long long>(v), static_cast<unsigned long long>(target));
      return -1;
    }
    if (Clock::now() >= next_print) {
      const double t = seconds_since(t0);
      std::printf("  [%s] %llu/%llu (%.0f/s)\n", label.c_str(), static_cast<unsigned long long>(v),
                  static_cast<unsigned long long>(target), static_cast<double>(v) / t);
      std::fflush(stdout);
      next_print += std::chrono::seconds(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

Bench::Bench(BenchOptions o) : o_(std::move(o)) {
  result_ = {{"date", now_utc()},
             {"commit", DOPPEL_GIT_COMMIT},
             {"machine", {{"cores", std::thread::hardware_concurrency()}, {"cpu", cpu_model()}}},
             {"quick", o_.quick},
             {"scenarios", json::object()}};
}

std::string Bench::dir(const std::string& name) {
  const std::string d = o_.work_dir + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void Bench::save() {
  if (o_.out.empty()) return;
  std::ofstream(o_.out) << result_.dump(2) << "\n";
}

std::vector<std::string> Bench::gateway_args(std::vector<std::string> extra) const {
  if (o_.shards > 0) {
    extra.push_back("--shards");
    extra.push_back(std::to_string(o_.shards));
  }
  extra.insert(extra.end(), o_.doppeld_args.begin(), o_.doppeld_args.end());
  return extra;
}

LoadOptions Bench::load(int port, uint64_t messages, uint64_t devices, int qos,
                        const std::string& prefix) const {
  LoadOptions l;
  l.port = port;
  l.connections = o_.connections;
  l.messages = messages;
  l.devices = devices;
  l.qos = qos;
  l.id_prefix = prefix;
  return l;
}

bool Bench::doppeld_has_flag(const std::string& flag) const {
  FILE* p = ::popen((o_.doppeld + " --help 2>&1").c_str(), "r");
  if (p == nullptr) return false;
  std::string help;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) help.append(buf, n);
  ::pclose(p);
  return help.find(flag) != std::string::npos;
}

json Bench::fail(const Status& s) {
  std::printf("  FAILED: %s\n", s.to_string().c_str());
  return {{"ok", false}, {"error", s.to_string()}};
}

json Bench::fail_log(const std::string& what, const Gateway& gw) {
  const std::string log = gw.log();
  std::printf("  FAILED: %s\n%s\n", what.c_str(),
              log.substr(log.size() > 2000 ? log.size() - 2000 : 0).c_str());
  return {{"ok", false}, {"error", what}};
}

int Bench::run() {
  bool ok = true;
  for (const auto& s : o_.scenarios) {
    if (g_interrupted) break;
    std::printf("\n### %s\n", s.c_str());
    std::fflush(stdout);
    json r;
    const auto t0 = Clock::now();
    const Scenario* scenario = find_scenario(s);
    r = scenario != nullptr ? (this->*(scenario->run))()
                            : json{{"ok", false}, {"error", "no scenario named '" + s + "'"}};
    r["scenario_seconds"] = std::round(seconds_since(t0) * 10) / 10;
    if (r.value("ok", true) == false) ok = false;
    result_["scenarios"][s] = r;
    save();
    if (o_.store == "postgres" && scenario != nullptr && store_scenario(s) && !g_interrupted) {
      std::printf("\n### %s on PostgreSQL\n", s.c_str());
      std::fflush(stdout);
      json p = on_postgres(*scenario, r);
      if (p.value("ok", true) == false) ok = false;
      result_["scenarios"][s + "@postgres"] = p;
      save();
    }
  }
  summary();
  return ok && !g_interrupted ? 0 : 1;
}

bool Bench::store_scenario(const std::string& name) {
  for (const char* s : {"ingest", "latency", "restart", "api", "query", "jobs", "feed"}) {
    if (name == s) return true;
  }
  return false;
}

namespace {

// Every number in `a` (and one level of objects below it) with a counterpart in `b`: b / a.
json ratios(const json& a, const json& b) {
  json out = json::object();
  for (const auto& [k, v] : a.items()) {
    if (!b.contains(k)) continue;
    if (v.is_number() && b[k].is_number() && v.get<double>() != 0 && k != "scenario_seconds") {
      out[k] = std::round(b[k].get<double>() / v.get<double>() * 1000) / 1000;
    } else if (v.is_object() && b[k].is_object()) {
      json inner = ratios(v, b[k]);
      for (const auto& [ik, iv] : inner.items()) {
        if (iv.is_number()) out[k + "." + ik] = iv;
      }
    }
  }
  return out;
}

}  // namespace

json Bench::on_postgres(const Scenario& scenario, const json& on_sqlite) {
  const std::string sqlite_dir = o_.work_dir;
  if (!postgres_) {
    sim::LocalPostgresOptions po;
    po.steady_wal = true;
    postgres_ = std::make_unique<sim::LocalPostgres>(sqlite_dir + "/postgres-server", po);
    if (Status s = postgres_->start(); !s) return fail(s);
    std::printf(
        "private PostgreSQL on 127.0.0.1:%d (fsync on, synchronous_commit on, wal_init_zero "
        "off: WAL segments as a server in steady state has them)\n",
        postgres_->port());
  }
  set_store_for([this](const std::string& data_dir) {
    auto it = databases_.find(data_dir);
    if (it != databases_.end()) return it->second;
    auto uri = postgres_->create_database();
    return databases_[data_dir] = uri ? *uri : std::string("postgresql://unavailable");
  });
  o_.work_dir = sqlite_dir + "/on-postgres";
  std::filesystem::create_directories(o_.work_dir);
  const double cpu0 = postgres_->cpu_seconds();
  const double wal0 = postgres_->wal_bytes();
  const auto t0 = Clock::now();
  json r = (this->*(scenario.run))();
  r["scenario_seconds"] = std::round(seconds_since(t0) * 10) / 10;
  const double cpu = postgres_->cpu_seconds() - cpu0;
  const double wal = postgres_->wal_bytes() - wal0;
  set_store_for(nullptr);
  o_.work_dir = sqlite_dir;
  r["postgres_server_cpu_s"] = std::round(cpu * 100) / 100;
  r["postgres_wal_bytes"] = wal;
  r["ratio_to_sqlite"] = ratios(on_sqlite, r);
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("PostgreSQL server CPU",
                    fmt(cpu, 2) + " s (" +
                        fmt(cpu / std::max(0.1, r["scenario_seconds"].get<double>()), 2) +
                        " cores over the scenario)");
  rows.emplace_back("WAL written", fmt(wal / 1e6, 1) + " MB");
  for (const auto& [k, v] : r["ratio_to_sqlite"].items()) {
    rows.emplace_back(k + " (PostgreSQL / SQLite)", fmt(v.get<double>(), 3));
  }
  print_table(std::string(scenario.name) + ": PostgreSQL against SQLite, same run", rows);
  return r;
}

void Bench::summary() {
  const json& s = result_["scenarios"];
  std::vector<std::pair<std::string, std::string>> rows;
  if (s.contains("ingest") && s["ingest"].contains("updates_per_s")) {
    const json& i = s["ingest"];
    rows.emplace_back(
        "ingest (target >= 20000/s, >= 0.85 x ceiling)",
        fmt(i["updates_per_s"].get<double>()) + "/s, " + ratio_text(i) + " x ceiling");
  }
  if (s.contains("baseline") && s["baseline"].contains("doppeld_speedup")) {
    rows.emplace_back("doppeld vs read-merge-write baseline",
                      s["baseline"]["doppeld_speedup"].dump() + "x");
  }
  if (s.contains("latency") && s["latency"].contains("desired_to_device_ms")) {
    rows.emplace_back("desired -> device p99 (target <= 5 ms)",
                      s["latency"]["desired_to_device_ms"].value("p99", json()).dump() + " ms");
  }
  if (s.contains("memory") && s["memory"].contains("bytes_per_registered_twin")) {
    const json& mem = s["memory"];
    rows.emplace_back("per hibernated twin (target <= 64 B)",
                      mem["bytes_per_registered_twin"].dump() + " B (" +
                          mem["bytes_per_registered_twin_excluding_sqlite_cache"].dump() +
                          " B without SQLite's caches)");
    rows.emplace_back("per hot twin beyond state (target <= 1024 B)",
                      mem["bytes_per_hot_twin_beyond_state"].dump() + " B (" +
                          mem["bytes_per_hot_twin_beyond_state_excluding_sqlite_cache"].dump() +
                          " B without SQLite's caches)");
    rows.emplace_back("RSS with 1M registered (target <= 1 GiB)",
                      mem["projected_rss_1m_registered_mib"].dump() + " MiB");
  }
  if (s.contains("alarms") && s["alarms"].contains("lateness_sample_ms")) {
    rows.emplace_back("alarm lateness p99 (target <= 20 ms), early",
                      s["alarms"]["lateness_sample_ms"].value("p99", json()).dump() + " ms, " +
                          s["alarms"]["early_in_sample"].dump());
  }
  if (s.contains("restart") && s["restart"].contains("ready_seconds")) {
    rows.emplace_back("restart to ready (target <= 2 s)",
                      fmt(s["restart"]["ready_seconds"].get<double>() * 1000) + " ms");
  }
  if (s.contains("jobs") && s["jobs"].contains("executions_per_s")) {
    rows.emplace_back("job rollout (target >= 5000 twins/s)",
                      fmt(s["jobs"]["executions_per_s"].get<double>()) + " twins/s");
  }
  if (!rows.empty()) print_table("summary against DESIGN §10", rows);
  if (!o_.out.empty()) std::printf("\nresults written to %s\n", o_.out.c_str());
}

json Bench::feed() {
  if (!doppeld_has_flag("--history")) {
    std::printf("  skipped: this doppeld has no change feed\n");
    return {{"ok", true}, {"skipped", true}};
  }
  FeedBenchOptions f;
  f.doppeld = o_.doppeld;
  f.work_dir = dir("feed");
  f.gateway_args = gateway_args({});
  f.rate = o_.feed_rate;
  f.seconds = o_.feed_seconds;
  f.devices = o_.devices;
  f.connections = o_.connections;
  if (o_.quick) {
    f.filtered = 10;
    f.devices = std::min<uint64_t>(f.devices, 100);
  }
  return run_feed_bench(f);
}

json Bench::query() {
  if (!doppeld_has_flag("--index")) {
    std::printf("  skipped: this doppeld has no fleet queries\n");
    return {{"ok", true}, {"skipped", true}};
  }
  QueryBenchOptions q;
  q.doppeld = o_.doppeld;
  q.work_dir = dir("query");
  q.gateway_args = gateway_args({});
  q.twins = o_.query_twins;
  q.connections = o_.connections;
  if (o_.quick) {
    q.page_reads = 20;
    q.count_reads = 2;
    q.updates = std::min<uint64_t>(q.updates, q.twins);
  }
  return run_query_bench(q);
}

json Bench::jobs() {
  JobsBenchOptions j;
  j.doppeld = o_.doppeld;
  j.work_dir = dir("jobs");
  j.gateway_args = gateway_args({});
  j.twins = o_.job_twins;
  j.connections = o_.connections;
  if (o_.quick) {
    j.background_rate = 200;
    j.probe_seconds = 1;
    j.paced_rate = 200;
  }
  return run_jobs_bench(j);
}

json Bench::console() {
  // The browser side needs node and Chromium (scripts/setup.sh installs both, and the script's
  // packages from tests/console/package-lock.json).
  const std::string script = std::string(DOPPEL_SOURCE_DIR) + "/tests/console/measure.mjs";
  if (std::system("command -v node >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1") != 0 ||
      ::access((std::string(DOPPEL_SOURCE_DIR) + "/tests/console/node_modules").c_str(), R_OK) !=
          0) {
    std::printf(
        "  skipped: needs node, chromium and tests/console/node_modules (scripts/setup.sh)\n");
    return {{"ok", true}, {"skipped", true}};
  }
  ConsoleBenchOptions c;
  c.doppeld = o_.doppeld;
  c.script = script;
  c.work_dir = dir("console");
  c.gateway_args = gateway_args({});
  c.twins = o_.console_twins;
  c.connections = o_.connections;
  if (o_.quick) {
    c.live_seconds = 3;
    c.loads = 1;
  }
  return run_console_bench(c);
}

json Bench::cluster() {
  ClusterBenchOptions c;
  c.doppeld = o_.doppeld;
  c.work_dir = dir("cluster");
  c.connections = o_.connections;
  if (o_.quick) {
    c.max_nodes = 2;
    c.messages = 5000;
    c.api_seconds = 1;
    c.kills = 1;
    c.lease_s = 2;
  }
  return run_cluster_bench(c);
}

json Bench::contention() {
  ContentionBenchOptions c;
  c.doppeld = o_.doppeld;
  c.work_dir = dir("contention");
  c.gateway_args = gateway_args({});
  c.twins = o_.job_twins;
  c.connections = o_.connections;
  if (o_.quick) c.probe_seconds = 1;
  return run_contention_bench(c);
}

json Bench::api() {
  ApiBenchOptions a;
  a.doppeld = o_.doppeld;
  a.work_dir = dir("api");
  // 1,024 wrk connections come from one address: above doppeld's default per-address limit
  // (1000), which a doppeld from before the limit existed does not know.
  a.gateway_args = doppeld_has_flag("--http-max-connections-per-ip")
                       ? gateway_args({"--http-max-connections-per-ip", "4096"})
                       : gateway_args({});
  a.seconds = o_.api_seconds;
  a.idle_connections = o_.api_idle;
  // Streams and HTTPS only where the doppeld under test has them (a "before" build may not).
  a.stream_readers = doppeld_has_flag("--http-stream-buffer-bytes") ? 100 : 0;
  a.https = doppeld_has_flag("--http-tls-cert");
  if (o_.quick) {
    a.twins = 100;
    a.concurrency = {1, 64};
    a.stream_readers = std::min(a.stream_readers, 10);
  }
  return run_api_bench(a);
}

const std::vector<Scenario>& Bench::scenarios() {
  static const std::vector<Scenario> kAll = {
      {"ceiling", &Bench::ceiling, true,
       "publishers -> Mosquitto -> counting subscriber, QoS 0 and 1 (the raw limit)"},
      {"ingest", &Bench::ingest, true,
       "the same load through doppeld, every update committed; ratio to ceiling"},
      {"baseline", &Bench::baseline, true,
       "the same load through a read-merge-write-per-message handler"},
      {"latency", &Bench::latency, true,
       "PATCH -> delta at the device (and command delivery) under background ingest"},
      {"memory", &Bench::memory, true, "RSS per registered (hibernated) twin and per hot twin"},
      {"alarms", &Bench::alarms, true,
       "N staleness deadlines spread over a window: lateness, early firings"},
      {"restart", &Bench::restart, true,
       "start -> /readyz with the twins stored; overdue alarms at start-up"},
      {"api", &Bench::api, true,
       "GET twin / PATCH desired under wrk at 1, 64, 1024 connections, as ratios\n"
       "to GET /healthz; again with 5000 idle connections; RSS per idle one"},
      {"feed", &Bench::feed, true,
       "commit -> change-feed subscriber latency under load; bytes per event;\nas-of reads"},
      {"query", &Bench::query, true,
       "fleet queries over 1M twins: indexed page, count by state, full scans;\n"
       "what an expression index costs per write"},
      {"jobs", &Bench::jobs, true,
       "a desired patch rolled out to 100k twins whose devices answer: executions/s;\n"
       "PATCH -> delta under background ingest, without and during the rollout"},
      {"contention", &Bench::contention, true,
       "PATCH -> delta while 20 continuous jobs rescan 100k twins (unindexed);\n"
       "events-page and history latency while 8 clients loop full-scan queries"},
      {"console", &Bench::console, true,
       "the web console in Chromium over 1M twins: open -> first table and counts,\n"
       "first-load bytes; report -> DOM with 10 twins on screen at 100 reports/s"},
      {"cluster", &Bench::cluster, true,
       "doppelds in cluster mode on one PostgreSQL: ingest, PATCH and a job's rollout\n"
       "with 1, 2, 3 nodes (ratios to one node), and the takeover window over 10 kill -9s"},
      {"aws", &Bench::aws, true,
       "ingest from AWS-dialect devices (shadow updates) against Doppel's own,\n"
       "alternating runs through the same broker: the ratio (target >= 0.9)"},
      {"overload", &Bench::overload, false,
       "the rate doppeld sustains, and how long a burst above it lasts before the\n"
       "broker's queue overflows and drops (not in the default list)"},
  };
  return kAll;
}

const Scenario* find_scenario(const std::string& name) {
  for (const Scenario& s : Bench::scenarios()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace doppel::bench

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "count-subscriber") {
    signal(SIGTERM, on_signal);
    return count_subscriber(argv[2], std::stoi(argv[3]), argv[4]);
  }
  BenchOptions o;
  std::string scenarios;
  std::string scenario_help;
  for (const Scenario& sc : Bench::scenarios()) {
    if (sc.by_default) scenarios += (scenarios.empty() ? "" : ",") + std::string(sc.name);
    std::string line = sc.help;
    for (size_t at = 0; (at = line.find('\n', at)) != std::string::npos; at += 13) {
      line.insert(at + 1, std::string(12, ' '));
    }
    std::string name = std::string("  ") + sc.name;
    name.resize(std::max<size_t>(name.size() + 1, 12), ' ');
    scenario_help += name + line + "\n";
  }
  CLI::App app{
      "doppel-bench - measures Doppel against the limits of this machine (DESIGN §10).\n\n"
      "Scenarios (comma-separated, in this order by default):\n" +
      scenario_help + "Each starts its own Mosquitto and doppeld on loopback and stops by itself."};
  app.get_formatter()->column_width(36);
  app.add_option("--scenarios,-s", scenarios, "which scenarios to run")->capture_default_str();
  app.add_flag("--quick", o.quick, "tiny sizes (seconds): checks the harness, not performance");
  app.add_option("--out,-o", o.out, "write the results as JSON to this file");
  app.add_option("--doppeld", o.doppeld, "doppeld binary (default: next to this one)");
  app.add_option("--work-dir", o.work_dir, "where brokers and databases go (default: a temp dir)");
  app.add_flag("--keep", o.keep, "keep the work directory");
  app.add_option("--messages", o.messages, "updates for ceiling/ingest/baseline")
      ->capture_default_str();
  app.add_option("--devices", o.devices, "distinct device ids they go to")->capture_default_str();
  app.add_option("--connections", o.connections, "publisher connections")->capture_default_str();
  app.add_option("--patch-rate", o.patch_rate, "latency: PATCHes per second")
      ->capture_default_str();
  app.add_option("--latency-seconds", o.latency_seconds, "latency: how long")
      ->capture_default_str();
  app.add_option("--background-rate", o.background_rate, "latency: background updates/s")
      ->capture_default_str();
  app.add_option("--memory-twins", o.memory_twins, "memory/restart: twins registered")
      ->capture_default_str();
  app.add_option("--hot-twins", o.hot_twins, "memory: twins touched (made hot)")
      ->capture_default_str();
  app.add_option("--alarm-twins", o.alarm_twins, "alarms: deadlines armed")->capture_default_str();
  app.add_option("--alarm-window-s", o.alarm_window_s,
                 "alarms: spread the deadlines over this long (0: arm as fast as possible)")
      ->capture_default_str();
  app.add_option("--alarm-after-s", o.alarm_after_s,
                 "alarms: staleness window (default: window + 30 s, all armed at once)")
      ->capture_default_str();
  app.add_option("--overload-queue", o.overload_queue,
                 "overload: the broker's max_queued_messages (the burst is five times this)")
      ->capture_default_str();
  app.add_option("--api-seconds", o.api_seconds, "api: seconds per wrk run")->capture_default_str();
  app.add_option("--api-idle", o.api_idle, "api: idle connections held open")
      ->capture_default_str();
  app.add_option("--query-twins", o.query_twins, "query: twins registered")->capture_default_str();
  app.add_option("--console-twins", o.console_twins, "console: twins registered")
      ->capture_default_str();
  app.add_option("--job-twins", o.job_twins, "jobs, contention: twins registered")
      ->capture_default_str();
  app.add_option("--shards", o.shards, "doppeld --shards (default: its own)");
  app.add_option("--feed-rate", o.feed_rate, "feed: device updates/s while measuring")
      ->capture_default_str();
  app.add_option("--feed-seconds", o.feed_seconds, "feed: seconds per phase")
      ->capture_default_str();
  app.add_option("--store", o.store,
                 "postgres: run ingest, latency, restart, api, query, jobs and feed a second "
                 "time on a private PostgreSQL server (started here, fsync on) and report its "
                 "figures as ratios to SQLite's")
      ->capture_default_str()
      ->check(CLI::IsMember({"sqlite", "postgres"}));
  app.add_option("--doppeld-arg", o.doppeld_args,
                 "one more argument for every doppeld started (repeatable), e.g. "
                 "--doppeld-arg=--history=false");
  CLI11_PARSE(app, argc, argv);

  if (o.quick) {
    o.messages = std::min<uint64_t>(o.messages, 5000);
    o.devices = std::min<uint64_t>(o.devices, 100);
    o.patch_rate = std::min(o.patch_rate, 50.0);
    o.latency_seconds = std::min(o.latency_seconds, 2.0);
    o.background_rate = std::min(o.background_rate, 1000.0);
    o.memory_twins = std::min<uint64_t>(o.memory_twins, 3000);
    o.hot_twins = std::min<uint64_t>(o.hot_twins, 500);
    o.alarm_twins = std::min<uint64_t>(o.alarm_twins, 1000);
    o.alarm_window_s = std::min(o.alarm_window_s, 1.0);
    o.alarm_after_s = o.alarm_after_s > 0 ? std::min(o.alarm_after_s, 2.0) : 2.0;
    o.restart_overdue = std::min<uint64_t>(o.restart_overdue, 50);
    o.overload_queue = std::min<uint64_t>(o.overload_queue, 5000);
    o.api_seconds = std::min(o.api_seconds, 1.0);
    o.api_idle = std::min(o.api_idle, 200);
    o.feed_rate = std::min(o.feed_rate, 500.0);
    o.feed_seconds = std::min(o.feed_seconds, 1.0);
    o.query_twins = std::min<uint64_t>(o.query_twins, 2000);
    o.console_twins = std::min<uint64_t>(o.console_twins, 2000);
    o.job_twins = std::min<uint64_t>(o.job_twins, 2000);
  }
  std::stringstream list(scenarios);
  for (std::string s; std::getline(list, s, ',');) {
    if (find_scenario(s) == nullptr) {
      std::fprintf(stderr, "unknown scenario '%s' (see --help)\n", s.c_str());
      return 2;
    }
    o.scenarios.push_back(s);
  }
  if (o.doppeld.empty()) o.doppeld = sibling_binary("gateway/doppeld");
  if (::access(o.doppeld.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "doppeld not found at %s; build it or pass --doppeld\n",
                 o.doppeld.c_str());
    return 2;
  }
  const bool temp = o.work_dir.empty();
  if (temp) {
    o.work_dir =
        (fs::temp_directory_path() / ("doppel-bench-" + std::to_string(::getpid()))).string();
  }
  fs::create_directories(o.work_dir);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  std::printf("doppel-bench %s: %s on %u cores (%s), work dir %s\n", DOPPEL_GIT_COMMIT,
              o.quick ? "quick mode" : "full sizes", std::thread::hardware_concurrency(),
              cpu_model().c_str(), o.work_dir.c_str());
  int rc = Bench(o).run();
  if (temp && !o.keep) fs::remove_all(o.work_dir);
  return rc;
}
