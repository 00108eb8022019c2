#include "simulator/bench/feed.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include <httplib.h>

#include "simulator/bench/load.h"
#include "simulator/local_broker.h"

namespace doppel::bench {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// SSE subscribers on plain sockets, read by one thread: per event, now - its "ts".
class Subscribers {
 public:
  Subscribers(int port, const std::vector<std::string>& queries) {
    for (const auto& q : queries) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const std::string req = "GET /v1/events" + q +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
      if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) <= 0) {
        if (fd >= 0) ::close(fd);
        continue;
      }
      polls_.push_back({fd, POLLIN, 0});
      carry_.emplace_back();
    }
    thread_ = std::thread([this] { run(); });
  }
  ~Subscribers() {
    stop_ = true;
    thread_.join();
    for (auto& p : polls_) ::close(p.fd);
  }
  size_t size() const { return polls_.size(); }
  // Starts (or restarts) collecting latencies.
  void measure(bool on) {
    std::lock_guard lock(mu_);
    measuring_ = on;
    if (on) latencies_.clear();
  }
  std::vector<double> latencies() {
    std::lock_guard lock(mu_);
    return latencies_;
  }
  uint64_t closed() const { return closed_.load(); }

 private:
  void run() {
    std::vector<char> buf(1 << 16);
    while (!stop_.load()) {
      if (::poll(polls_.data(), polls_.size(), 50) <= 0) continue;
      const int64_t now = now_ms();
      for (size_t i = 0; i < polls_.size(); ++i) {
        if (polls_[i].fd < 0 || (polls_[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::recv(polls_[i].fd, buf.data(), buf.size(), 0);
        if (n <= 0) {
          ++closed_;
          polls_[i].fd = -polls_[i].fd - 1;  // ignored by poll; restored to close it
          continue;
        }
        std::string& text = carry_[i];
        text.append(buf.data(), static_cast<size_t>(n));
        size_t line = 0;
        for (size_t at; (at = text.find("\ndata: ", line)) != std::string::npos;) {
          const size_t end = text.find('\n', at + 7);
          if (end == std::string::npos) break;
          const size_t ts = text.find("\"ts\":", at);
          if (ts != std::string::npos && ts < end) {
            const int64_t t = std::strtoll(text.c_str() + ts + 5, nullptr, 10);
            std::lock_guard lock(mu_);
            if (measuring_) latencies_.push_back(static_cast<double>(now - t));
          }
          line = end;
        }
        text.erase(0, line);
      }
    }
    for (auto& p : polls_) {
      if (p.fd < 0) p.fd = -p.fd - 1;
    }
  }

  std::vector<pollfd> polls_;
  std::vector<std::string> carry_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> closed_{0};
  std::mutex mu_;
  bool measuring_ = false;
  std::vector<double> latencies_;
};

json summary(std::vector<double> ms) {
  if (ms.empty()) return {{"count", 0}};
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  };
  return {{"count", ms.size()}, {"p50_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", ms.back()}};
}

}  // namespace

json run_feed_bench(const FeedBenchOptions& o) {
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  Gateway gw(o.doppeld, o.work_dir + "/data", broker.uri(), o.gateway_args);
  if (gw.start() < 0) return {{"ok", false}, {"error", "doppeld did not start:\n" + gw.log()}};

  // Both phases under the same ingest: `rate` updates/s for the whole run.
  LoadOptions l;
  l.port = broker.port();
  l.connections = o.connections;
  l.devices = o.devices;
  l.qos = 1;
  l.rate = o.rate;
  l.messages = static_cast<uint64_t>(o.rate * (2 * o.seconds + 10));
  LoadGenerator gen(l);
  if (Status s = gen.connect(); !s) return {{"ok", false}, {"error", s.to_string()}};
  gen.start();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // every device exists; settled
  const int64_t settled_ms = now_ms();

  json r = {{"rate", o.rate}, {"seconds_per_phase", o.seconds}};
  bool ok = true;
  auto phase = [&](const char* name, const std::vector<std::string>& queries) {
    Subscribers subs(gw.port(), queries);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // connected, caught up
    const double events0 = gw.metric("doppel_store_writes_total");
    const auto stages_before = gw.metrics();
    subs.measure(true);
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(o.seconds * 1000)));
    subs.measure(false);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json p = summary(subs.latencies());
    p["subscribers"] = subs.size();
    p["writes_per_s"] = std::round((gw.metric("doppel_store_writes_total") - events0) / secs);
    p["events_received_per_s"] = std::round(p["count"].get<double>() / secs);
    if (subs.closed() > 0 || p["count"].get<size_t>() == 0) ok = false;
    std::printf("  %-10s %4zu subscribers  %8.0f events/s received  p50 %5.1f ms  p99 %6.1f ms\n",
                name, subs.size(), p["events_received_per_s"].get<double>(), p.value("p50_ms", 0.0),
                p.value("p99_ms", 0.0));
    // Where the time went: the write's path to its commit, then the feed's wake and write.
    p["stages"] = stage_breakdown(stages_before, gw.metrics());
    for (const auto& [stage, text] : stage_rows(p["stages"])) {
      std::printf("  %-22s %s\n", stage.c_str(), text.c_str());
    }
    std::fflush(stdout);
    r[name] = p;
  };
  phase("unfiltered", {""});
  std::vector<std::string> filtered;
  for (int i = 0; i < o.filtered; ++i) {
    std::string q = "?";
    for (int k = 0; k < o.twins_each; ++k) {
      const uint64_t dev = static_cast<uint64_t>(i * o.twins_each + k) % o.devices;
      q += (k ? "&" : "") + std::string("twin=") + device_name("bench-", dev);
    }
    filtered.push_back(q);
  }
  phase("filtered", filtered);

  // As-of reads (GET /v1/twins/{id}?as_of=... / ?as_of_version=...) while devices keep
  // reporting: random twins at random moments of the run, or random versions they had. Each
  // costs a snapshot plus the events after it (at most ~64 per twin).
  {
    httplib::Client http("127.0.0.1", gw.port());
    std::mt19937_64 rng(7);
    std::vector<double> by_time, by_version;
    uint64_t failed = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (int i = 0; i < 4000 && std::chrono::steady_clock::now() < until; ++i) {
      const std::string path = "/v1/twins/" + device_name("bench-", rng() % o.devices);
      std::string query;
      // The twin as it is now (not timed): its versions and when it was created.
      auto now = http.Get(path);
      const json doc = now && now->status == 200 ? json::parse(now->body, nullptr, false) : json();
      const uint64_t v = doc.is_object() ? doc.value("version", uint64_t{0}) : 0;
      if (v == 0) {
        ++failed;
        continue;
      }
      if (i % 2 == 0) {
        const int64_t from = std::max(settled_ms, doc.value("created_at", int64_t{0}));
        query = "?as_of=" +
                std::to_string(from +
                               static_cast<int64_t>(rng() % static_cast<uint64_t>(std::max<int64_t>(
                                                                1, now_ms() - from))));
      } else {
        query = "?as_of_version=" + std::to_string(1 + rng() % v);
      }
      const auto t0 = std::chrono::steady_clock::now();
      auto res = http.Get(path + query);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!res || res->status != 200) {
        ++failed;
        continue;
      }
      (i % 2 == 0 ? by_time : by_version).push_back(ms);
    }
    r["as_of_time"] = summary(by_time);
    r["as_of_version"] = summary(by_version);
    r["as_of_failed"] = failed;
    if (failed > 0) ok = false;
    std::printf(
        "  as-of reads: by time p50 %.2f ms p99 %.2f ms, by version p50 %.2f ms p99 %.2f ms, %llu "
        "failed\n",
        r["as_of_time"].value("p50_ms", 0.0), r["as_of_time"].value("p99_ms", 0.0),
        r["as_of_version"].value("p50_ms", 0.0), r["as_of_version"].value("p99_ms", 0.0),
        static_cast<unsigned long long>(failed));
    std::fflush(stdout);
  }
  gen.stop();
  const double events = gw.metric("doppel_history_events_total");
  gw.stop();  // closing checkpoints the WAL into the database file

  // Bytes per event: the database file over the events in it (its 1,000 twin rows are <1%).
  std::error_code ec;
  const auto db_bytes = std::filesystem::file_size(o.work_dir + "/data/doppel.db", ec);
  r["events"] = events;
  r["db_bytes_per_event"] =
      !ec && events > 0 ? std::round(static_cast<double>(db_bytes) / events) : 0.0;
  r["ok"] = ok;
  std::vector<std::pair<std::string, std::string>> rows;
  for (const char* name : {"unfiltered", "filtered"}) {
    const json& p = r[name];
    rows.emplace_back(
        std::string(name) + " (" + std::to_string(p["subscribers"].get<size_t>()) + " subscribers)",
        "p50 " + fmt(p.value("p50_ms", 0.0), 1) + " ms, p99 " + fmt(p.value("p99_ms", 0.0), 1) +
            " ms, " + fmt(p["events_received_per_s"].get<double>()) + " events/s received");
  }
  for (const char* name : {"as_of_time", "as_of_version"}) {
    const json& p = r[name];
    rows.emplace_back(std::string("as-of read, ") + (name[6] == 't' ? "by time" : "by version"),
                      "p50 " + fmt(p.value("p50_ms", 0.0), 2) + " ms, p99 " +
                          fmt(p.value("p99_ms", 0.0), 2) + " ms (" + fmt(p.value("count", 0.0)) +
                          " reads)");
  }
  rows.emplace_back("database bytes per event",
                    fmt(r["db_bytes_per_event"].get<double>()) + " B (" + fmt(events) + " events)");
  print_table("feed (commit -> SSE subscriber, under " + fmt(o.rate) + " updates/s)", rows);
  return r;
}

}  // namespace doppel::bench
