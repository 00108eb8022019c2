// Instruments for doppel-bench: CPU and memory of processes, Prometheus scraping, percentiles,
// a doppeld child, and result tables. Loopback only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "simulator/process.h"
#include "twins/document.h"

namespace doppel::bench {

using twins::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t);

using sim::cpu_seconds;
using sim::rss_kib;

// CPU used by several processes over an interval, in cores.
class CpuMeter {
 public:
  void add(const std::string& name, pid_t pid);
  void start();
  json stop() const;  // {"broker": 0.61, ...} in cores, plus "elapsed_s"

 private:
  std::vector<std::pair<std::string, pid_t>> procs_;
  std::vector<double> start_cpu_;
  Clock::time_point start_;
};

// Sorted samples -> p50/p90/p99/max.
json percentiles_ms(std::vector<double> samples_ms);

// Reported metadata as the twin document shows it ({"ts": ms[, "device_ts": ms]} leaves) back in
// the compact form doppeld holds in memory (ts, or [ts, device_ts]; twins/twin.h), so the memory
// scenario sizes the state as the gateway stores it.
json compact_reported_meta(const json& shown);

// A doppeld child on a fresh HTTP port.
// Where the doppelds started from now on keep their twins: empty (the SQLite file in their data
// directory) or a function that gives the --store URI for a data directory (the same one each
// time, so that a restart finds its twins).
using StoreFor = std::function<std::string(const std::string& data_dir)>;
void set_store_for(StoreFor store_for);

class Gateway {
 public:
  // "{http_port}" in an argument becomes the doppeld's HTTP port.
  Gateway(std::string doppeld, std::string data_dir, std::string broker_uri,
          std::vector<std::string> extra_args);
  ~Gateway();
  // Starts it; returns the seconds until /readyz answered 200 (negative on failure).
  double start(std::chrono::seconds within = std::chrono::seconds(120));
  // The same, ready when `up()` says so (an HTTPS gateway, which the plain probe cannot ask).
  double start_with(const std::function<bool()>& up,
                    std::chrono::seconds within = std::chrono::seconds(120));
  void stop();
  void kill9();
  pid_t pid() const { return process_.pid(); }
  int port() const { return port_; }
  std::string log() const { return process_.log(); }
  // Prometheus text -> {"name{labels}": value}.
  std::map<std::string, double> metrics() const;
  double metric(const std::string& key) const;

 private:
  std::string doppeld_, data_dir_, broker_uri_;
  std::vector<std::string> args_;
  int port_;
  sim::Process process_;
  int starts_ = 0;
};

// Parses Prometheus text exposition.
std::map<std::string, double> parse_metrics(const std::string& text);

// Where the time went between two scrapes of /metrics (Gateway::metrics()): for each stage of
// doppel_stage_seconds, and the batch commit (doppel_store_commit_seconds) as "commit", how many
// were observed and the upper bounds of the buckets holding p50 and p99, in ms:
// {"inbox": {"count", "p50_ms", "p99_ms"}, ...}.
json stage_breakdown(const std::map<std::string, double>& before,
                     const std::map<std::string, double>& after);
// Rows for print_table: "stage: p50 <= x ms, p99 <= y ms (n)".
std::vector<std::pair<std::string, std::string>> stage_rows(const json& breakdown);

// A small two-column table printer.
void print_table(const std::string& title,
                 const std::vector<std::pair<std::string, std::string>>& rows);
std::string fmt(double v, int decimals = 0);

// The default path of a sibling binary: <dir of this executable>/../<relative>.
std::string sibling_binary(const std::string& relative);

}  // namespace doppel::bench
