#include "simulator/bench/api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <sys/wait.h>

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

// Holds `n` idle keep-alive connections to `port`, spread over 127.0.0.1-10 (per-address
// limits). Each has made one request (GET /healthz) and keeps its connection, as an HTTP client
// does: idle under the idle timeout (60 s), not a silent socket the header timeout would close
// in the middle of the measurement.
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
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (int fd : fds_) (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    for (int fd : fds_) {
      pollfd p{fd, POLLIN, 0};
      char buf[1024];
      if (::poll(&p, 1, 10'000) == 1 && ::recv(fd, buf, sizeof buf, 0) > 12 &&
          std::string_view(buf, 12) == "HTTP/1.1 200") {
        ++answered_;
      }
    }
  }
  ~IdleConnections() {
    for (int fd : fds_) ::close(fd);
  }
  size_t size() const { return fds_.size(); }
  // How many had their first request answered (and so are keep-alive idle now).
  size_t answered() const { return answered_; }

 private:
  std::vector<int> fds_;
  size_t answered_ = 0;
};

class Runner {
 public:
  Runner(const ApiBenchOptions& o, int port, std::string wrk, std::string scheme = "http")
      : o_(o), port_(port), wrk_(std::move(wrk)), scheme_(std::move(scheme)) {
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
         "-s", scripts_[kind], scheme_ + "://127.0.0.1:" + std::to_string(port_) + "/"},
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
  std::string scheme_;
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

// Runs a shell command; its exit status.
int shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// `readers` connections each read GET /v1/debug/ticks at their own (full) pace for `seconds`:
// {"readers", "events_per_s", "mb_per_s", "cut_off"}. One thread polls them all.
json measure_streams(int port, int readers, double seconds) {
  std::vector<int> fds;
  const std::string request =
      "GET /v1/debug/ticks?pace=client&interval_ms=0&bytes=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int i = 0; i < readers; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) <= 0) {
      if (fd >= 0) ::close(fd);
      continue;
    }
    fds.push_back(fd);
  }
  std::vector<pollfd> polls;
  for (int fd : fds) polls.push_back({fd, POLLIN, 0});
  std::vector<char> last(fds.size(), 0);  // an event ends with "\n\n", maybe across reads
  uint64_t events = 0, bytes = 0;
  size_t closed = 0;
  std::vector<char> buf(1 << 16);
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds && closed < polls.size()) {
    if (::poll(polls.data(), polls.size(), 100) <= 0) continue;
    for (size_t i = 0; i < polls.size(); ++i) {
      if (polls[i].fd < 0 || (polls[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::recv(polls[i].fd, buf.data(), buf.size(), 0);
      if (n <= 0) {
        polls[i].fd = -1;
        ++closed;
        continue;
      }
      bytes += static_cast<uint64_t>(n);
      for (ssize_t k = 0; k < n; ++k) {
        const char prev = k == 0 ? last[i] : buf[static_cast<size_t>(k - 1)];
        if (buf[static_cast<size_t>(k)] == '\n' && prev == '\n') ++events;
      }
      last[i] = buf[static_cast<size_t>(n - 1)];
    }
  }
  const double secs = seconds_since(t0);
  for (int fd : fds) ::close(fd);
  return {{"readers", fds.size()},
          {"events_per_s", std::round(static_cast<double>(events) / secs)},
          {"mb_per_s", std::round(static_cast<double>(bytes) / secs / 1e4) / 100},
          {"closed_early", closed}};
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
    if (idle.answered() != idle.size()) {
      ok = false;
      std::printf("  only %zu of %zu idle connections had their first request answered\n",
                  idle.answered(), idle.size());
    }
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
  // Streams: readers at their own pace; the bound must cut none of them off.
  if (o.stream_readers > 0) {
    json st = measure_streams(gw.port(), o.stream_readers, o.seconds);
    st["cut_off"] = gw.metric("doppel_http_refused_total{reason=\"stream_too_slow\"}");
    std::printf("  streams  c=%-5d %8.0f events/s  %.1f MB/s  cut off %.0f\n",
                st["readers"].get<int>(), st["events_per_s"].get<double>(),
                st["mb_per_s"].get<double>(), st["cut_off"].get<double>());
    if (st["cut_off"].get<double>() > 0 || st["closed_early"].get<size_t>() > 0) {
      ok = false;
      std::printf("  a reader at its own pace was cut off or closed\n");
    }
    r["streams"] = st;
  }
  gw.stop();

  // HTTPS: the same GET at the idle-phase concurrency, over TLS (a throwaway certificate), as a
  // ratio to plain HTTP in this run.
  if (o.https && !on_path("openssl").empty() && !on_path("curl").empty()) {
    const std::string d = o.work_dir;
    const int made =
        shell("cd '" + d +
              "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.pem "
              "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1");
    std::vector<std::string> args = o.gateway_args;
    args.insert(args.end(), {"--http-tls-cert", d + "/tls.pem", "--http-tls-key", d + "/tls.key"});
    Gateway tls(o.doppeld, d + "/data", broker.uri(), args);
    if (made == 0 && tls.start_with([&] {
          return shell("curl -sf --max-time 2 --cacert '" + d + "/tls.pem' https://127.0.0.1:" +
                       std::to_string(tls.port()) + "/readyz >/dev/null 2>&1") == 0;
        }) >= 0) {
      Runner secure(o, tls.port(), wrk, "https");
      json h = {{"connections", o.idle_concurrency}};
      for (const char* kind : {"healthz", "get"}) {
        json one = secure.run(kind, o.idle_concurrency);
        if (one.contains("error")) return failure(one["error"].get<std::string>());
        h[kind] = one;
      }
      for (const auto& level : levels) {
        if (level["connections"] == o.idle_concurrency && level["get"]["rps"].get<double>() > 0) {
          h["get_ratio_to_http"] =
              std::round(h["get"]["rps"].get<double>() / level["get"]["rps"].get<double>() * 100) /
              100;
        }
      }
      r["https"] = h;
      tls.stop();
    } else {
      std::printf("  HTTPS run skipped: no certificate, or doppeld did not start with it\n");
    }
  }
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
  if (r.contains("streams")) {
    rows.emplace_back(
        std::to_string(r["streams"]["readers"].get<int>()) + " stream readers (ticks, own pace)",
        fmt(r["streams"]["events_per_s"].get<double>()) + " events/s, " +
            fmt(r["streams"]["mb_per_s"].get<double>(), 1) + " MB/s");
  }
  if (r.contains("https")) {
    rows.emplace_back("HTTPS: GET twin c=" + std::to_string(o.idle_concurrency),
                      fmt(r["https"]["get"]["rps"].get<double>()) + " req/s (" +
                          r["https"].value("get_ratio_to_http", json(0)).dump() +
                          " x plain), p99 " + fmt(r["https"]["get"]["p99_ms"].get<double>(), 2) +
                          " ms");
  }
  print_table("api (wrk, keep-alive; broker idle)", rows);
  return r;
}

}  // namespace doppel::bench
