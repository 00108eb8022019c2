#include "simulator/bench/cluster.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "simulator/bench/load.h"
#include "simulator/local_broker.h"
#include "simulator/local_postgres.h"
#include "twins/partition.h"

namespace doppel::bench {
namespace {

using Clock = std::chrono::steady_clock;

json get_json(int port, const std::string& path, int timeout_s = 2) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1, 0);
  c.set_read_timeout(timeout_s, 0);
  auto r = c.Get(path);
  if (!r || r->status != 200) return nullptr;
  json j = json::parse(r->body, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}

// The nodes of one run: PostgreSQL database, broker and `n` doppelds in cluster mode.
struct Nodes {
  std::vector<std::unique_ptr<Gateway>> gw;

  bool settled(size_t live) const {
    json c = get_json(gw.front()->port(), "/v1/cluster");
    if (!c.is_object()) return false;
    size_t serving = 0;
    for (const auto& m : c["members"]) {
      if (m["state"] == "alive" && m["partitions"].get<size_t>() > 0) ++serving;
    }
    return c["partitions"]["unowned"] == 0 && serving == live;
  }
  bool wait_settled(size_t live, double within_s) const {
    const auto t0 = Clock::now();
    while (seconds_since(t0) < within_s) {
      if (settled(live)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  double committed() const {
    double sum = 0;
    for (const auto& g : gw) sum += std::max(0.0, g->metric("doppel_store_writes_total"));
    return sum;
  }
};

// Committed device updates per second: `messages` reports as fast as the broker takes them.
json ingest(const Nodes& nodes, int broker_port, const ClusterBenchOptions& o) {
  const double before = nodes.committed();
  LoadOptions l;
  l.port = broker_port;
  l.connections = o.connections;
  l.messages = o.messages;
  l.devices = o.devices;
  LoadGenerator load(l);
  if (!load.connect()) return {{"updates_per_s", -1}};
  const auto t0 = Clock::now();
  load.start();
  load.wait();
  const double target = before + static_cast<double>(o.messages);
  double last = before;
  auto last_change = Clock::now();
  // Until all are committed, or nothing more is for 5 s (some were lost: say how many).
  while (nodes.committed() < target && seconds_since(last_change) < 5) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (const double now = nodes.committed(); now > last) {
      last = now;
      last_change = Clock::now();
    }
  }
  const double committed = nodes.committed() - before;
  const double took = std::chrono::duration<double>(last_change - t0).count();
  return {{"updates_per_s", std::round(committed / std::max(0.001, took))},
          {"committed", committed},
          {"not_committed", static_cast<double>(o.messages) - committed}};
}

// PATCH desired through every node in turn: answered 200 per second, and the latency.
json api(const Nodes& nodes, const ClusterBenchOptions& o) {
  std::atomic<uint64_t> ok{0}, failed{0};
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(static_cast<size_t>(o.api_clients));
  std::vector<std::thread> clients;
  for (int c = 0; c < o.api_clients; ++c) {
    clients.emplace_back([&, c] {
      const Gateway& g = *nodes.gw[static_cast<size_t>(c) % nodes.gw.size()];
      httplib::Client http("127.0.0.1", g.port());
      http.set_keep_alive(true);
      http.set_tcp_nodelay(true);
      http.set_read_timeout(30, 0);
      for (uint64_t n = 0; !stop.load(); ++n) {
        const std::string id = "api-" + std::to_string((c * 7919 + n) % o.twins);
        const auto t0 = Clock::now();
        auto r = http.Patch("/v1/twins/" + id + "/desired", "{\"n\":" + std::to_string(n) + "}",
                            "application/merge-patch+json");
        if (r && r->status == 200) {
          ++ok;
          lat[static_cast<size_t>(c)].push_back(seconds_since(t0) * 1000);
        } else {
          ++failed;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.api_seconds));
  stop.store(true);
  for (auto& t : clients) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return {{"patches_per_s", static_cast<double>(ok.load()) / o.api_seconds},
          {"failed", failed.load()},
          {"latency_ms", percentiles_ms(all)}};
}

// A job over every twin (the ingest's devices and the API's twins), its rate far above what
// dispatch reaches, created through the first node, whichever node owns it: executions per second
// from the POST until none is pending (each applied by its twin's owner and recorded in progress;
// no device answers, so none completes), most of them sent by the job's node to the other nodes.
json rollout(const Nodes& nodes, int n) {
  httplib::Client c("127.0.0.1", nodes.gw.front()->port());
  c.set_read_timeout(120, 0);
  const std::string id = "rollout-" + std::to_string(n);
  const json body = {{"id", id},
                     {"target", {{"query", "id LIKE '%'"}}},
                     {"action", {{"desired", {{"rollout", n}}}}},
                     {"rate_per_s", 1000000}};
  const auto t0 = Clock::now();
  auto created = c.Post("/v1/jobs", body.dump(), "application/json");
  if (!created || created->status != 201) {
    return {{"ok", false}, {"error", created ? created->body : std::string("no answer")}};
  }
  const double total = json::parse(created->body)["total"].get<double>();
  double took = 0;
  while (seconds_since(t0) < 120 && took == 0) {
    auto got = c.Get("/v1/jobs/" + id);
    if (got && got->status == 200 && json::parse(got->body)["counts"]["pending"] == 0) {
      took = seconds_since(t0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  c.Post("/v1/jobs/" + id + "/cancel", "", "application/json");
  if (took == 0) return {{"ok", false}, {"error", "the rollout did not finish in 120 s"}};
  return {{"ok", true},
          {"twins", total},
          {"seconds", std::round(took * 1000) / 1000},
          {"executions_per_s", std::round(total / took)}};
}

}  // namespace

json run_cluster_bench(const ClusterBenchOptions& o) {
  sim::LocalPostgresOptions po;
  po.steady_wal = true;
  sim::LocalPostgres pg(o.work_dir + "/postgres-server", po);
  if (Status s = pg.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  const std::string secret = o.work_dir + "/cluster.secret";
  std::ofstream(secret) << "doppel-bench-cluster-secret-0123456789\n";

  json r = {{"lease_s", o.lease_s}, {"runs", json::object()}};
  std::vector<std::pair<std::string, std::string>> rows;
  json one;
  for (int n = 1; n <= o.max_nodes; ++n) {
    const std::string dir = o.work_dir + "/nodes-" + std::to_string(n);
    std::filesystem::create_directories(dir);
    auto db = pg.create_database();
    if (!db) return {{"ok", false}, {"error", db.status().to_string()}};
    sim::LocalBroker broker(dir);
    if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
    Nodes nodes;
    for (int k = 1; k <= n; ++k) {
      const std::string name = "n" + std::to_string(k);
      nodes.gw.push_back(std::make_unique<Gateway>(
          o.doppeld, dir + "/" + name, broker.uri(),
          std::vector<std::string>{"--store", *db, "--cluster", "--node-id", name, "--advertise",
                                   "http://127.0.0.1:{http_port}", "--cluster-secret-file", secret,
                                   "--lease-s", fmt(o.lease_s, 1)}));
      if (nodes.gw.back()->start() < 0) {
        return {{"ok", false},
                {"error", "node " + name + " did not start:\n" + nodes.gw.back()->log()}};
      }
    }
    if (!nodes.wait_settled(static_cast<size_t>(n), 60)) {
      return {{"ok", false}, {"error", "the cluster of " + std::to_string(n) + " did not settle"}};
    }
    std::printf("  %d node%s: settled; ingest...\n", n, n == 1 ? "" : "s");
    std::fflush(stdout);
    json run;
    run["ingest"] = ingest(nodes, broker.port(), o);
    run["ingest_updates_per_s"] = run["ingest"]["updates_per_s"];
    {
      httplib::Client c("127.0.0.1", nodes.gw.front()->port());
      for (int i = 0; i < o.twins; ++i)
        c.Put("/v1/twins/api-" + std::to_string(i), "{}", "application/json");
    }
    std::printf("  %d node%s: API...\n", n, n == 1 ? "" : "s");
    std::fflush(stdout);
    run["api"] = api(nodes, o);
    std::printf("  %d node%s: job rollout...\n", n, n == 1 ? "" : "s");
    std::fflush(stdout);
    run["rollout"] = rollout(nodes, n);

    if (n == o.max_nodes && o.kills > 0) {
      std::vector<double> windows;
      for (int kill = 0; kill < o.kills; ++kill) {
        const size_t victim = static_cast<size_t>(kill) % nodes.gw.size();
        Gateway& dead = *nodes.gw[victim];
        Gateway& via = *nodes.gw[(victim + 1) % nodes.gw.size()];
        // A twin whose partition the victim serves.
        json ready = get_json(dead.port(), "/readyz");
        std::set<uint32_t> owned;
        if (ready.is_object() && ready.contains("cluster")) {
          for (const auto& p : ready["cluster"]["partitions"]) owned.insert(p.get<uint32_t>());
        }
        std::string id;
        for (int i = 0; i < 100000 && id.empty(); ++i) {
          const std::string c = "kill-" + std::to_string(i);
          if (owned.count(twins::partition_of(c)) > 0) id = c;
        }
        if (id.empty()) return {{"ok", false}, {"error", "the victim serves no partition"}};
        httplib::Client http("127.0.0.1", via.port());
        http.set_read_timeout(30, 0);
        http.Put("/v1/twins/" + id, "{}", "application/json");
        dead.kill9();
        const auto t0 = Clock::now();
        while (seconds_since(t0) < 60) {
          auto g = http.Get("/v1/twins/" + id);
          if (g && g->status == 200) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        windows.push_back(seconds_since(t0) * 1000);
        std::printf("  kill %d of %d: node n%zu's twin served again after %.0f ms\n", kill + 1,
                    o.kills, victim + 1, windows.back());
        std::fflush(stdout);
        if (dead.start() < 0 || !nodes.wait_settled(nodes.gw.size(), 60)) {
          return {{"ok", false}, {"error", "the killed node did not rejoin:\n" + dead.log()}};
        }
      }
      r["takeover_ms"] = percentiles_ms(windows);
    }
    for (auto& g : nodes.gw) g->stop();
    r["runs"][std::to_string(n)] = run;
    if (n == 1) one = run;
    const double ingest_ratio = run["ingest_updates_per_s"].get<double>() /
                                std::max(1.0, one["ingest_updates_per_s"].get<double>());
    const double api_ratio = run["api"]["patches_per_s"].get<double>() /
                             std::max(1.0, one["api"]["patches_per_s"].get<double>());
    run["ingest_ratio_to_one_node"] = std::round(ingest_ratio * 100) / 100;
    run["api_ratio_to_one_node"] = std::round(api_ratio * 100) / 100;
    const double rollout_ratio = run["rollout"].value("executions_per_s", 0.0) /
                                 std::max(1.0, one["rollout"].value("executions_per_s", 0.0));
    run["rollout_ratio_to_one_node"] = std::round(rollout_ratio * 100) / 100;
    r["runs"][std::to_string(n)] = run;
    rows.emplace_back(std::to_string(n) + " node(s): ingest",
                      fmt(run["ingest_updates_per_s"].get<double>()) + "/s (" +
                          fmt(ingest_ratio, 2) + " x one node), not committed " +
                          fmt(run["ingest"]["not_committed"].get<double>()));
    rows.emplace_back(std::to_string(n) + " node(s): PATCH desired",
                      fmt(run["api"]["patches_per_s"].get<double>()) + "/s (" + fmt(api_ratio, 2) +
                          " x one node), p99 " +
                          run["api"]["latency_ms"].value("p99", json()).dump() + " ms");
    rows.emplace_back(std::to_string(n) + " node(s): job rollout",
                      run["rollout"].value("ok", false)
                          ? fmt(run["rollout"]["executions_per_s"].get<double>()) +
                                " executions/s (" + fmt(rollout_ratio, 2) + " x one node) over " +
                                fmt(run["rollout"]["twins"].get<double>()) + " twins"
                          : run["rollout"].value("error", std::string("failed")));
  }
  if (r.contains("takeover_ms")) {
    rows.emplace_back("takeover window (kill -9 -> twin served), p50 / p99",
                      r["takeover_ms"].value("p50", json()).dump() + " / " +
                          r["takeover_ms"].value("p99", json()).dump() + " ms (lease " +
                          fmt(o.lease_s, 1) + " s)");
  }
  print_table("cluster (nodes share this machine's 2 cores with PostgreSQL and the load)", rows);
  r["ok"] = true;
  return r;
}

}  // namespace doppel::bench
