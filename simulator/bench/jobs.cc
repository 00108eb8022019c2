#include "simulator/bench/jobs.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "mqtt/client.h"
#include "simulator/bench/load.h"
#include "simulator/local_broker.h"

namespace doppel::bench {
namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// An operator's PATCHes of one twin's desired state at a fixed rate, and when each one's delta
// reached the device: the latency probe.
class Probe {
 public:
  Probe(const std::string& broker_uri, int http_port, double rate)
      : http_port_(http_port), rate_(rate) {
    mqtt::ClientOptions o;
    o.uri = broker_uri;
    o.client_id = "jobs-probe";
    device_ = std::make_unique<mqtt::Client>(o);
    device_->on_message([this](mqtt::IncomingMessage&& m) {
      const int64_t t = now_ns();
      const json j = json::parse(m.payload, nullptr, false);
      if (!j.is_object() || !j.contains("state")) return;
      const auto seq = j["state"].value("seq", int64_t{-1});
      std::lock_guard lock(mu_);
      auto it = sent_.find(seq);
      if (it == sent_.end()) return;
      ms_.push_back(static_cast<double>(t - it->second) / 1e6);
      sent_.erase(it);
    });
  }
  Status connect() {
    if (Status s = device_->connect(std::chrono::seconds(10)); !s) return s;
    if (Status s = device_->subscribe({"twins/" + id() + "/delta"}, 1); !s) return s;
    return device_->publish("twins/" + id() + "/status", R"({"state":"online"})", 1);
  }
  static std::string id() { return "jlat-0"; }
  // PATCHes until `stop` (or `seconds` passed); then waits up to 10 s for their deltas.
  json run(double seconds, const std::atomic<bool>& stop) {
    httplib::Client http("127.0.0.1", http_port_);
    http.set_keep_alive(true);
    http.set_tcp_nodelay(true);
    if (!warmed_up_) {
      // One PATCH whose delta is awaited and not counted: the probe's own MQTT client delivered
      // the first two deltas of a fresh connection 50 and 100 ms late (a subscriber started
      // beside it, mosquitto_sub, received them on time), which alone made the row's p99.
      const int64_t seq = next_seq_++;
      {
        std::lock_guard lock(mu_);
        sent_[seq] = now_ns();
      }
      (void)http.Patch("/v1/twins/" + id() + "/desired", json{{"seq", seq}}.dump(),
                       "application/merge-patch+json");
      wait_for_deltas(std::chrono::seconds(5));
      warmed_up_ = true;
    }
    {
      std::lock_guard lock(mu_);
      ms_.clear();
      sent_.clear();
      response_ms_.clear();
    }
    const auto start = Clock::now();
    uint64_t patches = 0;
    for (uint64_t k = 0; !stop.load() && seconds_since(start) < seconds; ++k) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(static_cast<double>(k) / rate_)));
      const int64_t seq = next_seq_++;
      {
        std::lock_guard lock(mu_);
        sent_[seq] = now_ns();
      }
      const int64_t t = now_ns();
      auto res = http.Patch("/v1/twins/" + id() + "/desired", json{{"seq", seq}}.dump(),
                            "application/merge-patch+json");
      response_ms_.push_back(static_cast<double>(now_ns() - t) / 1e6);
      if (!res || res->status != 200) {
        std::lock_guard lock(mu_);
        sent_.erase(seq);
        ++failed_;
      }
      ++patches;
    }
    wait_for_deltas(std::chrono::seconds(10));
    std::lock_guard lock(mu_);
    json r = percentiles_ms(ms_);
    r["patches"] = patches;
    r["missing"] = sent_.size();
    r["failed"] = failed_;
    // The PATCH's answer (after its commit): what of the delay is before the delta leaves.
    r["response"] = percentiles_ms(response_ms_);
    return r;
  }
  void disconnect() { (void)device_->disconnect(std::chrono::milliseconds(500)); }

 private:
  // Until every PATCH sent has had its delta, or `limit` passed.
  void wait_for_deltas(std::chrono::seconds limit) {
    const auto wait = Clock::now();
    while (seconds_since(wait) < static_cast<double>(limit.count())) {
      {
        std::lock_guard lock(mu_);
        if (sent_.empty()) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  int http_port_;
  double rate_;
  std::unique_ptr<mqtt::Client> device_;
  std::mutex mu_;
  std::map<int64_t, int64_t> sent_;  // seq -> sent at (ns)
  std::vector<double> ms_;
  std::vector<double> response_ms_;  // only the probing thread touches it
  uint64_t failed_ = 0;
  int64_t next_seq_ = 0;
  bool warmed_up_ = false;  // only the probing thread touches it
};

std::string row(const json& p) {
  std::string out = p.value("count", 0) == 0
                        ? std::string("none")
                        : "p50 " + p["p50"].dump() + "  p99 " + p["p99"].dump() + "  max " +
                              p["max"].dump() + " ms (" + p["count"].dump() + ")";
  // A probe's PATCH whose delta never came, or that was refused, fails the scenario: say so.
  if (p.value("missing", 0) > 0) out += ", " + p["missing"].dump() + " deltas never arrived";
  if (p.value("failed", 0) > 0) out += ", " + p["failed"].dump() + " PATCHes refused";
  return out;
}

}  // namespace

json run_jobs_bench(const JobsBenchOptions& o) {
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  Gateway gw(o.doppeld, o.work_dir + "/data", broker.uri(), o.gateway_args);
  if (gw.start() < 0) return {{"ok", false}, {"error", "doppeld did not start:\n" + gw.log()}};
  json r = {{"twins", o.twins}, {"responders", o.responders}};

  if (auto e = register_fleet(broker.port(), gw, o.twins, o.connections, "jb-"); !e.empty()) {
    return {{"ok", false}, {"error", e}};
  }

  // The devices: a shared subscription spreads the deltas over the responders; each reports
  // the delta's state back for its twin, as a device that applied it would.
  std::atomic<uint64_t> answered{0};
  std::vector<std::unique_ptr<mqtt::Client>> responders;
  for (int i = 0; i < o.responders; ++i) {
    mqtt::ClientOptions c;
    c.uri = broker.uri();
    c.client_id = "jobs-devices-" + std::to_string(i);
    c.max_inflight = 2000;
    auto client = std::make_unique<mqtt::Client>(c);
    mqtt::Client* raw = client.get();
    client->on_message([raw, &answered](mqtt::IncomingMessage&& m) {
      // twins/<id>/delta
      const size_t end = m.topic.rfind('/');
      if (end == std::string::npos || end <= 6) return;
      const std::string id = m.topic.substr(6, end - 6);
      const json delta = json::parse(m.payload, nullptr, false);
      if (!delta.is_object() || !delta.contains("state")) return;
      (void)raw->publish("twins/" + id + "/reported", json{{"state", delta["state"]}}.dump(), 1);
      answered.fetch_add(1);
    });
    if (Status s = client->connect(std::chrono::seconds(10)); !s) {
      return {{"ok", false}, {"error", s.to_string()}};
    }
    if (Status s = client->subscribe({"$share/jobs-bench/twins/+/delta"}, 1); !s) {
      return {{"ok", false}, {"error", s.to_string()}};
    }
    responders.push_back(std::move(client));
  }
  Probe probe(broker.uri(), gw.port(), o.patch_rate);
  if (Status s = probe.connect(); !s) return {{"ok", false}, {"error", s.to_string()}};

  // Background ingest on other twins, through both latency phases.
  LoadOptions bg;
  bg.port = broker.port();
  bg.connections = 1;
  bg.devices = 1000;
  bg.messages = static_cast<uint64_t>(o.background_rate * 3600);
  bg.id_prefix = "bgj-";
  bg.client_prefix = "jobs-bg-";
  bg.rate = o.background_rate;
  LoadGenerator background(bg);
  if (Status s = background.connect(); !s) return {{"ok", false}, {"error", s.to_string()}};
  background.start();
  std::this_thread::sleep_for(std::chrono::seconds(1));

  std::atomic<bool> never{false};
  r["patch_to_delta_without_job_ms"] = probe.run(o.probe_seconds, never);

  // The job: every registered twin, the rate limit far above what the machine does.
  httplib::Client http("127.0.0.1", gw.port());
  http.set_read_timeout(std::chrono::seconds(300));
  const json body = {{"id", "bench-rollout"},
                     {"target", {{"query", "id LIKE 'jb-%'"}}},
                     {"action", {{"desired", {{"mode", "eco"}, {"setpoint", 21.5}}}}},
                     {"rate_per_s", 1'000'000}};
  const double writes0 = gw.metric("doppel_store_writes_total");
  CpuMeter cpu;
  cpu.add("doppeld", gw.pid());
  cpu.add("broker", broker.pid());
  cpu.add("devices_and_bench", ::getpid());
  cpu.start();
  const auto t0 = Clock::now();
  auto created = http.Post("/v1/jobs", body.dump(), "application/json");
  const double create_ms = seconds_since(t0) * 1000;
  if (!created || created->status == 404) {
    background.stop();
    std::printf("  skipped: this doppeld has no jobs\n");
    return {{"ok", true}, {"skipped", true}};
  }
  if (created->status != 201) {
    background.stop();
    return {{"ok", false},
            {"error", "POST /v1/jobs: " + std::to_string(created->status) + " " + created->body}};
  }
  std::atomic<bool> job_done{false};
  json during;
  std::thread probing([&] { during = probe.run(600, job_done); });
  json job;
  double dispatched_s = -1;
  double done_s = -1;
  double last_print = 0;
  while (seconds_since(t0) < 600) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto res = http.Get("/v1/jobs/bench-rollout");
    if (!res || res->status != 200) continue;
    job = json::parse(res->body, nullptr, false);
    const json& c = job["counts"];
    const double t = seconds_since(t0);
    if (dispatched_s < 0 && c.value("pending", 1) == 0) dispatched_s = t;
    if (job.value("status", "") != "running") {
      done_s = t;
      break;
    }
    if (t - last_print >= 5) {
      last_print = t;
      std::printf("  [rollout] %.0f s: %s\n", t, c.dump().c_str());
      std::fflush(stdout);
    }
  }
  const double store_writes = gw.metric("doppel_store_writes_total") - writes0;
  r["cpu_cores"] = cpu.stop();
  job_done.store(true);
  probing.join();

  // A second rollout paced by rate_per_s (the way to leave room for everything else): the
  // operator's PATCHes while it runs, then it is cancelled.
  const json paced_body = {{"id", "bench-paced"},
                           {"target", {{"query", "id LIKE 'jb-%'"}}},
                           {"action", {{"desired", {{"mode", "normal"}}}}},
                           {"rate_per_s", o.paced_rate}};
  auto paced = http.Post("/v1/jobs", paced_body.dump(), "application/json");
  if (paced && paced->status == 201) {
    std::atomic<bool> never_stop{false};
    r["patch_to_delta_during_paced_job_ms"] = probe.run(o.probe_seconds, never_stop);
    auto cancelled = http.Post("/v1/jobs/bench-paced/cancel", "", "application/json");
    if (cancelled && cancelled->status == 200) {
      const json j = json::parse(cancelled->body, nullptr, false);
      r["paced_job"] = {{"rate_per_s", o.paced_rate}, {"counts", j["counts"]}};
    }
  }
  background.stop();
  probe.disconnect();
  for (auto& c : responders) (void)c->disconnect(std::chrono::milliseconds(500));

  const json counts = job.is_object() ? job["counts"] : json::object();
  const uint64_t succeeded = counts.value("succeeded", uint64_t{0});
  r["create_ms"] = create_ms;
  r["status"] = job.value("status", "");
  r["counts"] = counts;
  r["dispatched_seconds"] = dispatched_s;
  r["completed_seconds"] = done_s;
  r["executions_per_s"] = done_s > 0 ? static_cast<double>(succeeded) / done_s : 0;
  r["dispatch_per_s"] = dispatched_s > 0 ? static_cast<double>(o.twins) / dispatched_s : 0;
  r["deltas_answered"] = answered.load();
  r["store_writes_during_job"] = store_writes;
  r["patch_to_delta_during_job_ms"] = during;
  const double p99_before = r["patch_to_delta_without_job_ms"].value("p99", 0.0);
  if (p99_before > 0)
    r["patch_p99_ratio_during_vs_without"] = during.value("p99", 0.0) / p99_before;
  r["ok"] = r["status"] == "completed" && succeeded == o.twins && during.value("missing", 1) == 0 &&
            r.contains("paced_job") && r["patch_to_delta_without_job_ms"].value("missing", 1) == 0;
  print_table("jobs (" + std::to_string(o.twins) + " twins, devices answer every delta)",
              {{"POST /v1/jobs (target stored)", fmt(create_ms, 1) + " ms"},
               {"all dispatched after", fmt(dispatched_s, 2) + " s"},
               {"all converged (completed) after", fmt(done_s, 2) + " s"},
               {"executions per second", fmt(r["executions_per_s"].get<double>())},
               {"CPU cores: doppeld, broker, devices+bench",
                fmt(r["cpu_cores"].value("doppeld", 0.0), 2) + ", " +
                    fmt(r["cpu_cores"].value("broker", 0.0), 2) + ", " +
                    fmt(r["cpu_cores"].value("devices_and_bench", 0.0), 2)},
               {"PATCH -> delta, no job", row(r["patch_to_delta_without_job_ms"])},
               {"PATCH -> delta, during the job", row(during)},
               {"PATCH response, no job / during",
                fmt(r["patch_to_delta_without_job_ms"]["response"].value("p99", 0.0), 1) + " / " +
                    fmt(during["response"].value("p99", 0.0), 1) + " ms p99"},
               {"PATCH -> delta, job at " + fmt(o.paced_rate) + "/s",
                row(r.value("patch_to_delta_during_paced_job_ms", json::object()))},
               {"background ingest target", fmt(o.background_rate) + " updates/s"}});
  gw.stop();
  return r;
}

}  // namespace doppel::bench

namespace doppel::bench {
namespace {

// The latency of GET `path` (one keep-alive client) while `stop` is false: each request's time.
json time_gets(int port, const std::string& path, double seconds, double rate) {
  httplib::Client http("127.0.0.1", port);
  http.set_keep_alive(true);
  http.set_read_timeout(std::chrono::seconds(60));
  std::vector<double> ms;
  uint64_t failed = 0;
  const auto start = Clock::now();
  for (uint64_t k = 0; seconds_since(start) < seconds; ++k) {
    std::this_thread::sleep_until(
        start + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(static_cast<double>(k) / rate)));
    const int64_t t = now_ns();
    auto res = http.Get(path);
    ms.push_back(static_cast<double>(now_ns() - t) / 1e6);
    if (!res || res->status != 200) ++failed;
  }
  json r = percentiles_ms(ms);
  r["failed"] = failed;
  return r;
}

}  // namespace

json run_contention_bench(const ContentionBenchOptions& o) {
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  Gateway gw(o.doppeld, o.work_dir + "/data", broker.uri(), o.gateway_args);
  if (gw.start() < 0) return {{"ok", false}, {"error", "doppeld did not start:\n" + gw.log()}};
  json r = {{"twins", o.twins}};
  if (auto e = register_fleet(broker.port(), gw, o.twins, o.connections, "ct-"); !e.empty()) {
    return {{"ok", false}, {"error", e}};
  }
  Probe probe(broker.uri(), gw.port(), o.patch_rate);
  if (Status s = probe.connect(); !s) return {{"ok", false}, {"error", s.to_string()}};
  std::atomic<bool> never{false};
  httplib::Client http("127.0.0.1", gw.port());
  http.set_read_timeout(std::chrono::seconds(300));

  // 1. An operator's PATCH -> delta without jobs, then while continuous jobs whose queries no
  // index serves look for new twins over the whole fleet (matching none: all their cost is the
  // rescans).
  r["patch_to_delta_without_jobs_ms"] = probe.run(o.probe_seconds, never);
  int created = 0;
  for (int i = 0; i < o.jobs; ++i) {
    const json body = {{"id", "scan-" + std::to_string(i)},
                       {"target",
                        {{"query", "reported.no_such_field_" + std::to_string(i) +
                                       " = 1 OR tags.x LIKE '%nomatch%'"}}},
                       {"action", {{"desired", {{"m", i}}}}},
                       {"mode", "continuous"},
                       {"rate_per_s", 10}};
    auto res = http.Post("/v1/jobs", body.dump(), "application/json");
    if (res && res->status == 201) ++created;
  }
  r["continuous_jobs"] = created;
  CpuMeter cpu;
  cpu.add("doppeld", gw.pid());
  cpu.start();
  r["patch_to_delta_during_jobs_ms"] = probe.run(o.probe_seconds, never);
  r["doppeld_cpu_during_jobs"] = cpu.stop().value("doppeld", 0.0);
  for (int i = 0; i < o.jobs; ++i) {
    (void)http.Post("/v1/jobs/scan-" + std::to_string(i) + "/cancel", "", "application/json");
  }
  const double before = r["patch_to_delta_without_jobs_ms"].value("p99", 0.0);
  if (before > 0) {
    r["patch_p99_ratio_jobs_vs_without"] =
        r["patch_to_delta_during_jobs_ms"].value("p99", 0.0) / before;
  }

  // 2. A feed reader's JSON pages (and a history read) alone, then while `scanners` clients loop
  // full-scan queries (sorted by an unindexed field, and counted by one).
  // From the oldest retained event: a read of the events table, not of the in-memory tail.
  const std::string page = "/v1/events?limit=100";
  r["events_page_alone_ms"] = time_gets(gw.port(), page, o.probe_seconds, 50);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> scans{0}, refused{0}, timed_out{0};
  std::vector<std::thread> scanners;
  for (int i = 0; i < o.scanners; ++i) {
    scanners.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", gw.port());
      c.set_keep_alive(true);
      c.set_read_timeout(std::chrono::seconds(120));
      const std::string q =
          i % 2 == 0 ? "/v1/twins?q=reported.temperature%20%3E%3D%200&order_by=reported.seq%20desc"
                     : "/v1/fleet/count?q=reported.temperature%20%3E%3D%200&group_by=reported.seq";
      while (!stop.load()) {
        auto res = c.Get(q);
        if (!res) continue;
        if (res->status == 200) scans.fetch_add(1);
        if (res->status == 429) {
          refused.fetch_add(1);
          std::this_thread::sleep_for(std::chrono::milliseconds(100));  // its Retry-After, briefly
        }
        if (res->status == 503) timed_out.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  r["events_page_during_scans_ms"] = time_gets(gw.port(), page, o.probe_seconds, 50);
  r["history_during_scans_ms"] =
      time_gets(gw.port(), "/v1/twins/" + Probe::id() + "/history?limit=10", o.probe_seconds, 20);
  stop.store(true);
  for (auto& t : scanners) t.join();
  r["scans_answered"] = scans.load();
  r["scans_refused_429"] = refused.load();
  r["scans_timed_out_503"] = timed_out.load();
  probe.disconnect();
  gw.stop();

  r["ok"] = created == o.jobs && r["patch_to_delta_during_jobs_ms"].value("missing", 1) == 0 &&
            r["events_page_during_scans_ms"].value("failed", 1) == 0 && scans.load() > 0;
  print_table(
      "contention (" + std::to_string(o.twins) + " twins)",
      {{"PATCH -> delta, no jobs", row(r["patch_to_delta_without_jobs_ms"])},
       {"PATCH -> delta, " + std::to_string(created) + " continuous unindexed jobs",
        row(r["patch_to_delta_during_jobs_ms"])},
       {"  p99 ratio (target <= 2)", fmt(r.value("patch_p99_ratio_jobs_vs_without", 0.0), 2)},
       {"  doppeld CPU during the jobs",
        fmt(r["doppeld_cpu_during_jobs"].get<double>(), 2) + " cores"},
       {"events page, alone", row(r["events_page_alone_ms"])},
       {"events page, " + std::to_string(o.scanners) + " clients scanning (target p99 <= 50)",
        row(r["events_page_during_scans_ms"])},
       {"history, during the scans", row(r["history_during_scans_ms"])},
       {"scans answered / refused 429 / timed out", std::to_string(scans.load()) + " / " +
                                                        std::to_string(refused.load()) + " / " +
                                                        std::to_string(timed_out.load())}});
  return r;
}

}  // namespace doppel::bench
