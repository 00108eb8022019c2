#include "simulator/bench/api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "simulator/local_broker.h"

namespace doppel::bench {
namespace {

namespace fs = std::filesystem;

// A wrk script: the request it sends, and a done() that prints one JSON line with the figures.
std::string wrk_script(const std::string& kind, uint64_t twins) {
  std::string request;
  if (kind == "healthz") {
    request = R"(request = function() return wrk.format("GET", "/healthz") end)";
  } else if (kind == "get") {
    request =
        "local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"GET\", "
        "\"/v1/twins/api-\" .. string.format(\"%07d\", n % " +
        std::to_string(twins) + "))\nend";
  } else {  // patch: every request changes desired, so every 2xx is a commit
    request =
        "local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"PATCH\", "
        "\"/v1/twins/api-\" .. string.format(\"%07d\", n % " +
        std::to_string(twins) +
        ") .. \"/desired\", {[\"Content-Type\"] = \"application/merge-patch+json\"}, "
        "'{\"v\":' .. n .. '}')\nend";
  }
  return request + R"(
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
)";
}

// Holds `n` idle TCP connections to `port`, spread over 127.0.0.1-10 (per-address limits).
class IdleConnections {
 public:
  IdleConnections(int port, int n) {
    for (int i = 0; i < n; ++i) {
      // Not inherited by wrk: its event loop is sized for its own descriptors only.
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) break;
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, ("127.0.0." + std::to_string(1 + i % 10)).c_str(), &local.sin_addr);
      ::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        break;
      }
      fds_.push_back(fd);
    }
  }
  ~IdleConnections() {
    for (int fd : fds_) ::close(fd);
  }
  size_t size() const { return fds_.size(); }

 private:
  std::vector<int> fds_;
};

class Runner {
 public:
  Runner(const ApiBenchOptions& o, int port, std::string wrk)
      : o_(o), port_(port), wrk_(std::move(wrk)) {
    for (const char* kind : {"healthz", "get", "patch"}) {
      const std::string path = o_.work_dir + "/wrk-" + kind + ".lua";
      std::ofstream(path) << wrk_script(kind, o_.twins);
      scripts_[kind] = path;
    }
  }

  // One wrk run: {"rps", "p50_ms", "p99_ms", "max_ms", "requests", "non2xx", "socket_errors",
  // "wrk_cpu_cores"}.
  json run(const std::string& kind, int connections) {
    const std::string log =
        o_.work_dir + "/wrk-" + kind + "-" + std::to_string(connections) + ".log";
    sim::Process wrk(
        {wrk_, "-t1", "-c" + std::to_string(connections),
         "-d" + std::to_string(std::max(1L, std::lround(o_.seconds))) + "s", "--timeout", "10s",
         "-s", scripts_[kind], "http://127.0.0.1:" + std::to_string(port_) + "/"},
        log);
    // wrk's own CPU: what the children reaped meanwhile used (doppeld and the broker still run).
    rusage before{};
    ::getrusage(RUSAGE_CHILDREN, &before);
    const auto t0 = Clock::now();
    int status = 0;
    const bool exited = wrk.wait_exit(
        std::chrono::milliseconds(static_cast<int64_t>(o_.seconds * 1000) + 60'000), &status);
    if (!exited) return {{"error", "wrk did not finish"}};
    rusage after{};
    ::getrusage(RUSAGE_CHILDREN, &after);
    auto seconds_of = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    const double wrk_cpu = seconds_of(after.ru_utime) - seconds_of(before.ru_utime) +
                           seconds_of(after.ru_stime) - seconds_of(before.ru_stime);
    const double wrk_cores = std::round(wrk_cpu / seconds_since(t0) * 100) / 100;
    std::string line;
    {
      std::ifstream in(log);
      for (std::string l; std::getline(in, l);) {
        if (!l.empty() && l[0] == '{') line = l;
      }
    }
    const json w = json::parse(line, nullptr, false);
    if (!w.is_object()) return {{"error", "no figures from wrk; see " + log}};
    const double secs = w["duration_us"].get<double>() / 1e6;
    const auto requests = w["requests"].get<uint64_t>();
    json r = {{"connections", connections},
              {"requests", requests},
              {"rps", std::round(static_cast<double>(requests) / secs)},
              {"p50_ms", w["p50_us"].get<double>() / 1000},
              {"p99_ms", w["p99_us"].get<double>() / 1000},
              {"max_ms", w["max_us"].get<double>() / 1000},
              {"non2xx", w["non2xx"]},
              {"socket_errors", w["socket_errors"]},
              {"wrk_cpu_cores", wrk_cores}};
    std::printf("  %-8s c=%-5d %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %llu\n",
                kind.c_str(), connections, r["rps"].get<double>(), r["p50_ms"].get<double>(),
                r["p99_ms"].get<double>(),
                static_cast<unsigned long long>(w["non2xx"].get<uint64_t>() +
                                                w["socket_errors"].get<uint64_t>()));
    std::fflush(stdout);
    return r;
  }

 private:
  const ApiBenchOptions& o_;
  int port_;
  std::string wrk_;
  std::map<std::string, std::string> scripts_;
};

// `name` on PATH, or empty.
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

json failure(const std::string& what) {
  std::printf("  FAILED: %s\n", what.c_str());
  return {{"ok", false}, {"error", what}};
}

}  // namespace

json run_api_bench(const ApiBenchOptions& o) {
  rlimit nofile{};  // the idle connections are ours too
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  const std::string wrk = on_path("wrk");
  if (wrk.empty()) return failure("wrk not found on PATH: apt-get install wrk");
  fs::create_directories(o.work_dir);
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return failure(s.to_string());
  Gateway gw(o.doppeld, o.work_dir + "/data", broker.uri(), o.gateway_args);
  if (gw.start() < 0) return failure("doppeld did not start:\n" + gw.log());
  {
    httplib::Client http("127.0.0.1", gw.port());
    for (uint64_t i = 0; i < o.twins; ++i) {
      char id[32];
      std::snprintf(id, sizeof id, "api-%07llu", static_cast<unsigned long long>(i));
      auto r =
          http.Put(std::string("/v1/twins/") + id, R"({"desired":{"v":0}})", "application/json");
      if (!r || (r->status != 201 && r->status != 200)) return failure("provisioning failed");
    }
  }
  Runner runner(o, gw.port(), wrk);
  json r = {{"twins", o.twins}, {"seconds_per_run", o.seconds}};
  json levels = json::array();
  bool ok = true;
  for (int c : o.concurrency) {
    json level = {{"connections", c}};
    const double writes0 = gw.metric("doppel_store_writes_total");
    for (const char* kind : {"healthz", "get", "patch"}) {
      json one = runner.run(kind, c);
      if (one.contains("error")) return failure(one["error"].get<std::string>());
      level[kind] = one;
    }
    // Every PATCH answered 2xx was committed: doppeld wrote at least that many times.
    const json& patch = level["patch"];
    const double ok_patches = patch["requests"].get<double>() - patch["non2xx"].get<double>();
    const double writes = gw.metric("doppel_store_writes_total") - writes0;
    level["patch_writes_committed"] = writes;
    if (writes < ok_patches) {
      ok = false;
      std::printf("  counts do not add up: %.0f PATCHes answered, %.0f writes committed\n",
                  ok_patches, writes);
    }
    const double floor = level["healthz"]["rps"].get<double>();
    level["get_ratio_to_healthz"] =
        floor > 0 ? std::round(level["get"]["rps"].get<double>() / floor * 1000) / 1000 : 0;
    level["patch_ratio_to_healthz"] =
        floor > 0 ? std::round(level["patch"]["rps"].get<double>() / floor * 1000) / 1000 : 0;
    levels.push_back(level);
  }
  r["levels"] = levels;

  // The same load with thousands of idle connections held open.
  const long rss0 = rss_kib(gw.pid());
  {
    IdleConnections idle(gw.port(), o.idle_connections);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // accepted and settled
    const long rss1 = rss_kib(gw.pid());
    r["idle_connections"] = idle.size();
    r["rss_per_idle_connection_bytes"] =
        idle.size() > 0
            ? std::round(static_cast<double>(rss1 - rss0) * 1024 / static_cast<double>(idle.size()))
            : 0;
    json with_idle = {{"connections", o.idle_concurrency}};
    for (const char* kind : {"healthz", "get"}) {
      json one = runner.run(kind, o.idle_concurrency);
      if (one.contains("error")) return failure(one["error"].get<std::string>());
      with_idle[kind] = one;
    }
    r["with_idle"] = with_idle;
    for (const auto& level : levels) {
      if (level["connections"] == o.idle_concurrency) {
        const double base = level["get"]["p99_ms"].get<double>();
        r["idle_p99_ratio"] =
            base > 0 ? std::round(with_idle["get"]["p99_ms"].get<double>() / base * 100) / 100 : 0;
      }
    }
  }
  gw.stop();
  r["ok"] = ok;

  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& level : levels) {
    const std::string c = std::to_string(level["connections"].get<int>());
    rows.emplace_back("c=" + c + " GET /healthz (floor)",
                      fmt(level["healthz"]["rps"].get<double>()) + " req/s, p99 " +
                          fmt(level["healthz"]["p99_ms"].get<double>(), 2) + " ms");
    rows.emplace_back("c=" + c + " GET twin",
                      fmt(level["get"]["rps"].get<double>()) + " req/s (" +
                          level["get_ratio_to_healthz"].dump() + " x floor), p99 " +
                          fmt(level["get"]["p99_ms"].get<double>(), 2) + " ms");
    rows.emplace_back("c=" + c + " PATCH desired",
                      fmt(level["patch"]["rps"].get<double>()) + " req/s (" +
                          level["patch_ratio_to_healthz"].dump() + " x floor), p99 " +
                          fmt(level["patch"]["p99_ms"].get<double>(), 2) + " ms");
  }
  rows.emplace_back(std::to_string(r["idle_connections"].get<size_t>()) +
                        " idle: GET twin c=" + std::to_string(o.idle_concurrency),
                    fmt(r["with_idle"]["get"]["rps"].get<double>()) + " req/s, p99 " +
                        fmt(r["with_idle"]["get"]["p99_ms"].get<double>(), 2) + " ms (" +
                        r.value("idle_p99_ratio", json(0)).dump() + " x without)");
  rows.emplace_back("RSS per idle connection",
                    fmt(r["rss_per_idle_connection_bytes"].get<double>()) + " B");
  print_table("api (wrk, keep-alive; broker idle)", rows);
  return r;
}

}  // namespace doppel::bench
