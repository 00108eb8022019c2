#include "simulator/bench/bench_util.h"

#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "simulator/local_broker.h"

namespace doppel::bench {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void CpuMeter::add(const std::string& name, pid_t pid) { procs_.emplace_back(name, pid); }

void CpuMeter::start() {
  start_cpu_.clear();
  for (const auto& [name, pid] : procs_) start_cpu_.push_back(cpu_seconds(pid));
  start_ = Clock::now();
}

json CpuMeter::stop() const {
  const double elapsed = seconds_since(start_);
  json out = json::object();
  for (size_t i = 0; i < procs_.size(); ++i) {
    const double used = cpu_seconds(procs_[i].second) - start_cpu_[i];
    out[procs_[i].first] = std::round(used / elapsed * 100) / 100;
  }
  out["elapsed_s"] = std::round(elapsed * 100) / 100;
  return out;
}

json compact_reported_meta(const json& shown) {
  if (!shown.is_object()) return shown;
  if (shown.contains("ts") && shown["ts"].is_number()) {
    if (shown.size() == 1) return shown["ts"];
    if (shown.size() == 2 && shown.contains("device_ts")) {
      return json::array({shown["ts"], shown["device_ts"]});
    }
  }
  json out = json::object();
  for (const auto& [key, value] : shown.items()) out[key] = compact_reported_meta(value);
  return out;
}

json percentiles_ms(std::vector<double> s) {
  if (s.empty()) return {{"count", 0}};
  std::sort(s.begin(), s.end());
  auto at = [&](double q) {
    const size_t i = std::min(s.size() - 1, static_cast<size_t>(std::ceil(q * s.size())) - 1);
    return std::round(s[i] * 1000) / 1000;
  };
  return {{"count", s.size()},
          {"p50", at(0.50)},
          {"p90", at(0.90)},
          {"p99", at(0.99)},
          {"max", std::round(s.back() * 1000) / 1000}};
}

namespace {
StoreFor& store_for() {
  static StoreFor f;
  return f;
}
}  // namespace

void set_store_for(StoreFor f) { store_for() = std::move(f); }

Gateway::Gateway(std::string doppeld, std::string data_dir, std::string broker_uri,
                 std::vector<std::string> extra_args)
    : doppeld_(std::move(doppeld)),
      data_dir_(std::move(data_dir)),
      broker_uri_(std::move(broker_uri)),
      args_(std::move(extra_args)),
      port_(sim::free_port()) {}

Gateway::~Gateway() { stop(); }

double Gateway::start(std::chrono::seconds within) {
  httplib::Client client("127.0.0.1", port_);
  client.set_connection_timeout(0, 200'000);
  return start_with(
      [&] {
        auto r = client.Get("/readyz");
        return r && r->status == 200;
      },
      within);
}

double Gateway::start_with(const std::function<bool()>& up, std::chrono::seconds within) {
  std::filesystem::create_directories(data_dir_);
  std::vector<std::string> argv = {
      doppeld_,   "--data",    data_dir_,     "--http", "127.0.0.1:" + std::to_string(port_),
      "--broker", broker_uri_, "--log-level", "warn"};
  if (store_for()) {
    argv.push_back("--store");
    argv.push_back(store_for()(data_dir_));
  }
  for (std::string arg : args_) {  // "{http_port}": this doppeld's (e.g. in --advertise)
    for (size_t at = arg.find("{http_port}"); at != std::string::npos;
         at = arg.find("{http_port}")) {
      arg.replace(at, 11, std::to_string(port_));
    }
    argv.push_back(std::move(arg));
  }
  const auto t0 = Clock::now();
  process_ = sim::Process(argv, data_dir_ + "/doppeld-" + std::to_string(++starts_) + ".log");
  while (seconds_since(t0) < static_cast<double>(within.count())) {
    if (!process_.running()) return -1;
    if (up()) return seconds_since(t0);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return -1;
}

void Gateway::stop() { process_.stop(std::chrono::seconds(60)); }

void Gateway::kill9() {
  process_.signal(SIGKILL);
  process_.wait_exit(std::chrono::seconds(10));
}

std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    try {
      out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    } catch (const std::exception&) {
    }
  }
  return out;
}

std::map<std::string, double> Gateway::metrics() const {
  httplib::Client client("127.0.0.1", port_);
  client.set_read_timeout(10, 0);
  auto r = client.Get("/metrics");
  return r && r->status == 200 ? parse_metrics(r->body) : std::map<std::string, double>{};
}

double Gateway::metric(const std::string& key) const {
  auto m = metrics();
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

std::string fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

void print_table(const std::string& title,
                 const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  std::printf("\n== %s ==\n", title.c_str());
  for (const auto& [k, v] : rows) {
    std::printf("  %-*s  %s\n", static_cast<int>(width), k.c_str(), v.c_str());
  }
  std::fflush(stdout);
}

json stage_breakdown(const std::map<std::string, double>& before,
                     const std::map<std::string, double>& after) {
  // series -> le -> observations between the scrapes (cumulative buckets, as exposed)
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;
  for (const auto& [key, value] : after) {
    std::string series;
    if (key.rfind("doppel_stage_seconds_bucket{stage=\"", 0) == 0) {
      const size_t from = key.find('"') + 1;
      series = key.substr(from, key.find('"', from) - from);
    } else if (key.rfind("doppel_store_commit_seconds_bucket{", 0) == 0) {
      series = "commit";
    } else {
      continue;
    }
    const size_t le = key.find("le=\"");
    if (le == std::string::npos) continue;
    const std::string bound = key.substr(le + 4, key.find('"', le + 4) - le - 4);
    const double b = bound == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(bound);
    const auto it = before.find(key);
    buckets[series].emplace_back(b, value - (it == before.end() ? 0.0 : it->second));
  }
  json out = json::object();
  for (auto& entry : buckets) {
    const std::string& series = entry.first;
    std::vector<std::pair<double, double>>& bs = entry.second;  // (a lambda below reads it)
    std::sort(bs.begin(), bs.end());
    const double total = bs.empty() ? 0 : bs.back().second;
    auto bound_of = [&](double q) {
      for (const auto& [b, n] : bs) {
        if (n >= q * total) return std::isinf(b) ? -1.0 : b * 1000.0;
      }
      return -1.0;
    };
    // The slowest observation's bucket: a rare stall (tens of milliseconds once in a run) moves
    // no percentile but shows here, and says which stage it was in.
    out[series] = {{"count", total},
                   {"p50_ms", bound_of(0.5)},
                   {"p99_ms", bound_of(0.99)},
                   {"max_ms", total > 0 ? bound_of(1.0) : 0.0}};
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> stage_rows(const json& breakdown) {
  std::vector<std::pair<std::string, std::string>> rows;
  auto ms = [](double v) { return v < 0 ? std::string("> 1000") : fmt(v, v < 1 ? 2 : 0); };
  for (const char* stage :
       {"inbox", "step", "commit_queue", "commit", "release", "feed_wake", "feed_write"}) {
    if (!breakdown.contains(stage)) continue;
    const json& b = breakdown[stage];
    if (b["count"].get<double>() <= 0) {
      rows.emplace_back("  stage " + std::string(stage), "no observations");
      continue;
    }
    rows.emplace_back(
        "  stage " + std::string(stage),
        "p50 <= " + ms(b["p50_ms"].get<double>()) + " ms, p99 <= " + ms(b["p99_ms"].get<double>()) +
            " ms, max <= " + ms(b.value("max_ms", 0.0)) + " ms (" + fmt(b["count"].get<double>()) +
            (std::string(stage) == "commit" ? " batches)" : ")"));
  }
  return rows;
}

std::string sibling_binary(const std::string& relative) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return relative;
  return (self.parent_path() / ".." / relative).lexically_normal().string();
}

}  // namespace doppel::bench
