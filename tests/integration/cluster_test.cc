// Three doppelds on one PostgreSQL database and one broker (--cluster, docs/scale-out.md): the
// 1,024 partitions spread over the nodes, any node answers any twin (forwarding to its owner),
// a device is served by exactly one node, and when a node is killed with SIGKILL under 16 API
// clients (desired changes and commands through every node) and simulated devices reporting,
// its partitions are owned again within two leases, no acknowledged change is lost, every
// acknowledged command ends, and every device gets its twin's last change.
// A node stopped with SIGSTOP until its leases run out finds, when it resumes, that it serves
// nothing: what it still had in flight is refused by the fence, and no twin goes back in time.
// A job runs on the node of its id's partition, reaches the simulated devices of every node's
// twins, and when that node is killed mid-rollout another takes it over and completes it with no
// twin changed twice. Device credentials live in the shared broker's dynamic-security plugin:
// issued through one node, honoured whichever node owns the twin, revoked through another.
// Waits are bounded to detect hangs, not to measure speed.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/postgres_server.h"
#include "tests/support/temp_dir.h"
#include "twins/partition.h"

using namespace doppel::testing;

namespace {

constexpr int kLeaseS = 2;  // short leases keep the failover cases short

struct Cluster {
  PostgresServer server;
  TempDir dir{"doppel-cluster-"};
  TempDir broker_dir{"doppel-cluster-broker-"};
  std::optional<DynsecSetup> dynsec;  // with device credentials: the broker's accounts
  Broker broker;
  std::string db = server.create_database();
  std::string secret_file = dir.file("secret");
  std::vector<std::unique_ptr<Doppeld>> nodes;

  // With `device_auth`, the broker keeps device accounts in its dynamic-security plugin and the
  // nodes run with --device-auth.
  explicit Cluster(bool device_auth = false)
      : dynsec(device_auth ? std::make_optional<DynsecSetup>(broker_dir) : std::nullopt),
        broker(broker_dir, dynsec ? dynsec->broker_config() : std::vector<std::string>{}) {
    std::ofstream(secret_file) << "a-test-secret-of-more-than-16-bytes\n";
  }
  Doppeld& add(const std::string& name, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"--store",
                                  db,
                                  "--cluster",
                                  "--node-id",
                                  name,
                                  "--advertise",
                                  "http://127.0.0.1:{http_port}",
                                  "--cluster-secret-file",
                                  secret_file,
                                  "--lease-s",
                                  std::to_string(kLeaseS)};
    args.insert(args.end(), extra.begin(), extra.end());
    if (dynsec) {
      const auto auth = dynsec->gateway_args();
      args.insert(args.end(), auth.begin(), auth.end());
    }
    nodes.push_back(std::make_unique<Doppeld>(dir.file(name), broker.uri(), args));
    nodes.back()->start();
    return *nodes.back();
  }
  // `devices` simulated devices (doppel-sim, ids sim_id(i)) reporting every `interval_s` and
  // answering deltas and commands; returns once every twin is online.
  Process fleet(int devices, int interval_s) {
    Process sim =
        start_sim(broker.uri(), dir.file("sim.log"),
                  {"--devices", std::to_string(devices), "--interval-s", std::to_string(interval_s),
                   "--delta-delay-s", "0.02", "--progress-s", "0", "--connect-rate", "200"});
    REQUIRE_MESSAGE(eventually(
                        [&] {
                          auto twins = nodes.front()->list_all();
                          return twins.size() == static_cast<size_t>(devices) &&
                                 std::all_of(twins.begin(), twins.end(), [](const json& t) {
                                   return t["connection"]["state"] == "online";
                                 });
                        },
                        30s),
                    "the simulated devices did not all come online; sim log:\n", sim.log());
    return sim;
  }
  // Every partition owned by a live node, each of `live` nodes serving some: the cluster settled.
  bool settled(Doppeld& via, size_t live) {
    auto c = via.get("/v1/cluster");
    if (c.status != 200) return false;
    size_t alive = 0;
    for (const auto& m : c.body["members"]) {
      if (m["state"] == "alive" && m["partitions"].get<size_t>() > 0) ++alive;
    }
    return c.body["partitions"]["unowned"] == 0 && alive == live;
  }
};

std::set<uint32_t> served(Doppeld& node) {
  auto r = node.get("/readyz");
  std::set<uint32_t> out;
  if (r.status != 200) return out;
  for (const auto& p : r.body["cluster"]["partitions"]) out.insert(p.get<uint32_t>());
  return out;
}

}  // namespace

TEST_CASE("three nodes share the partitions, and any node answers for any twin") {
  Cluster c;
  Doppeld& a = c.add("n1");
  Doppeld& b = c.add("n2");
  Doppeld& d = c.add("n3");
  REQUIRE_MESSAGE(eventually([&] { return c.settled(a, 3); }, 30s, 100ms),
                  a.get("/v1/cluster").body.dump());

  // /readyz on each node lists what it serves: together every partition, each once. (A node
  // lists a partition once it has taken it over, a moment after the membership table shows it
  // as the owner: the sets are read again until they add up.)
  std::set<uint32_t> sa, sb, sd;
  CHECK(eventually(
      [&] {
        sa = served(a);
        sb = served(b);
        sd = served(d);
        return sa.size() + sb.size() + sd.size() == 1024;
      },
      30s, 100ms));
  std::set<uint32_t> all(sa);
  all.insert(sb.begin(), sb.end());
  all.insert(sd.begin(), sd.end());
  CHECK(all.size() == 1024);
  for (auto* s : {&sa, &sb, &sd}) CHECK(s->size() >= 200);  // each near its third (342)

  // Writes through one node, reads through another: read-your-writes through forwarding.
  std::vector<Doppeld*> via = {&a, &b, &d};
  for (int i = 0; i < 30; ++i) {
    const std::string id = "c-" + std::to_string(i);
    auto put = via[i % 3]->request("PUT", "/v1/twins/" + id, "{}");
    REQUIRE_MESSAGE(put.status / 100 == 2, put.body.dump());
    auto patch = via[(i + 1) % 3]->patch_desired(id, {{"fw", i}});
    REQUIRE_MESSAGE(patch.status == 200, patch.body.dump());
    auto got = via[(i + 2) % 3]->get("/v1/twins/" + id);
    REQUIRE(got.status == 200);
    CHECK(got.body["desired"]["fw"] == i);
    // The fleet query reads the shared store from any node.
  }
  auto listed = d.get("/v1/twins?q=" + std::string("desired.fw%20%3E%3D%200") + "&limit=100");
  REQUIRE(listed.status == 200);
  CHECK(listed.body["items"].size() == 30);

  // A device: one delta, from the owner only, though every node receives its messages.
  TestDevice dev("c-7", c.broker.uri());
  dev.connect();
  dev.publish("status", R"({"state":"online","interval_s":30})");
  REQUIRE(dev.wait_for("delta", 1, 10s).size() >= 1);
  dev.publish("reported", R"({"state":{"fw":7}})");
  REQUIRE(
      eventually([&] { return a.get("/v1/twins/c-7").body["reported"]["fw"] == 7; }, 10s, 20ms));
  auto p = b.patch_desired("c-7", {{"fw", 8}});
  REQUIRE(p.status == 200);
  REQUIRE(dev.wait_for("delta", 2, 10s).size() >= 2);
  // Give a second (wrong) publisher time to show itself.
  std::this_thread::sleep_for(500ms);
  const auto deltas = dev.received("delta");
  for (const auto& delta : deltas) MESSAGE("delta: ", delta);
  CHECK(deltas.size() == 2);

  // A forged forward is refused, and so is a job dispatch without the cluster's signature.
  auto forged =
      a.request("GET", "/v1/twins/c-1", "",
                {{"Doppel-Forwarded", "n9#0;" + std::to_string(time(nullptr) * 1000) + ";00ff"}});
  CHECK(forged.status == 403);
  auto unsigned_run =
      a.request("POST", "/v1/cluster/jobs/j1/run", R"({"created_at": 1, "twins": ["c-1"]})");
  CHECK(unsigned_run.status == 403);

  // Metrics name the cluster's figures.
  const std::string m = a.text("/metrics");
  CHECK(m.find("doppel_cluster_partitions_served") != std::string::npos);
  CHECK(metric(m, "doppel_cluster_leases_acquired_total") >= 200);
}

TEST_CASE("a node killed with SIGKILL under 16 API clients: partitions owned again, nothing lost") {
  Cluster c;
  c.add("n1");
  c.add("n2");
  c.add("n3");
  Doppeld& a = *c.nodes[0];
  REQUIRE(eventually([&] { return c.settled(a, 3); }, 30s, 100ms));

  constexpr int kWriters = 16;
  constexpr int kTwinsPerWriter = 8;
  // Simulated devices, reporting: every fourth writer changes their twins (the device answers
  // each delta by reporting the value, and each command by succeeding), the others write twins
  // without a device (their commands end by their ttl).
  constexpr int kDeviceWriters = 4;
  constexpr int kDevices = kDeviceWriters * kTwinsPerWriter;
  Process sim = c.fleet(kDevices, 1);
  auto twin_of = [&](int w, int n) {
    if (w % 4 == 0) return sim_id((w / 4) * kTwinsPerWriter + n % kTwinsPerWriter);
    return "k-" + std::to_string(w) + "-" + std::to_string(n % kTwinsPerWriter);
  };
  std::mutex mu;
  std::map<std::string, int> acked;  // twin -> the last value acknowledged (writes in order)
  // Every seventh request is a command (no device: it ends by its ttl) — twin, command id.
  std::vector<std::pair<std::string, std::string>> commands;
  std::atomic<int> retried{0};
  std::atomic<int> unexpected{0};
  std::atomic<bool> stop{false};
  std::atomic<int> dead{-1};  // the node killed
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 1; !stop.load(); ++n) {
        const std::string id = twin_of(w, n);
        int node = (w + n) % 3;
        if (node == dead.load()) node = (node + 1) % 3;
        if (n % 7 == 0) {
          auto r = c.nodes[node]->request("POST", "/v1/twins/" + id + "/commands",
                                          R"({"name": "ping", "ttl_s": 1})");
          if (r.status == 202) {
            std::lock_guard lock(mu);
            commands.emplace_back(id, r.body["id"].get<std::string>());
          } else if (r.status != 503 && r.status != 0 && r.status != 429) {
            ++unexpected;
            MESSAGE("unexpected answer to a command ", r.status, ": ", r.body.dump());
          }
          continue;
        }
        auto r = c.nodes[node]->patch_desired(id, {{"n", n}});
        if (r.status == 200) {
          std::lock_guard lock(mu);
          acked[id] = n;
        } else if (r.status == 503 || r.status == 0) {
          ++retried;  // not acknowledged: no promise made
        } else {
          ++unexpected;
          MESSAGE("unexpected answer ", r.status, ": ", r.body.dump());
        }
      }
    });
  }
  std::this_thread::sleep_for(2s);
  const auto before = served(*c.nodes[1]);
  REQUIRE(!before.empty());
  dead.store(1);
  const auto killed_at = std::chrono::steady_clock::now();
  c.nodes[1]->kill9();
  // Every partition is served again, by the two left, within two leases (checked every 50 ms).
  REQUIRE_MESSAGE(
      eventually([&] { return served(a).size() + served(*c.nodes[2]).size() == 1024; }, 30s, 50ms),
      a.get("/v1/cluster").body.dump());
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  MESSAGE("partitions of the killed node served again after ", took_s, " s");
  CHECK(took_s <= 2.0 * kLeaseS + 0.5);  // the protocol's bound (plus the test's polling)
  std::this_thread::sleep_for(2s);
  stop.store(true);
  for (auto& t : writers) t.join();
  CHECK(unexpected.load() == 0);

  // Every acknowledged value is there (a later, unacknowledged attempt may have landed too).
  size_t checked = 0;
  for (const auto& [id, n] : acked) {
    auto got = c.nodes[checked % 2 == 0 ? 0 : 2]->get("/v1/twins/" + id);
    REQUIRE_MESSAGE(got.status == 200, id, " ", got.body.dump());
    CHECK_MESSAGE(got.body["desired"]["n"].get<int>() >= n, id);
    ++checked;
  }
  CHECK(checked == kWriters * kTwinsPerWriter);
  MESSAGE(checked, " twins checked; ", retried.load(), " writes answered 503 during the takeover");

  // Every acknowledged command is there and ends, the dead node's too: a device's succeeds (or
  // expires, if its ttl ran out while its twin changed owner); one without a device expires, by
  // a ttl alarm that fires on the new owner.
  REQUIRE(commands.size() >= 20);
  std::string unfinished;
  size_t succeeded = 0;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        unfinished.clear();
                        succeeded = 0;
                        for (const auto& [twin, command] : commands) {
                          auto got = a.get("/v1/twins/" + twin + "/commands/" + command);
                          const bool device = twin.starts_with("sim-");
                          const auto status = got.body.value("status", "");
                          if (device && status == "succeeded") ++succeeded;
                          if (got.status != 200 ||
                              !(status == "expired" || (device && status == "succeeded"))) {
                            unfinished += twin + "/" + command + " " + got.body.dump() + "\n";
                          }
                        }
                        return unfinished.empty();
                      },
                      30s, 500ms),
                  "commands that did not end:\n", unfinished);
  MESSAGE(commands.size(), " acknowledged commands ended, ", succeeded, " succeeded on a device");
  CHECK(succeeded > 0);

  // Every device got the last change of its twin, those pending on the dead node included (their
  // new owner reconciles them): each reports what its twin desires.
  std::string behind;
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            behind.clear();
            for (int i = 0; i < kDevices; ++i) {
              auto t = a.get("/v1/twins/" + sim_id(i)).body;
              if (!t["desired"].contains("n") || t["reported"]["n"] != t["desired"]["n"]) {
                behind += sim_id(i) + " " + t["desired"].dump() + " reported " +
                          t["reported"].dump() + "\n";
              }
            }
            return behind.empty();
          },
          30s, 500ms),
      "devices that did not get their twin's last change:\n", behind);
  sim.signal(SIGINT);
  CHECK(sim.wait_exit(15s));
}

TEST_CASE("a node paused past its leases serves nothing when it resumes; the fence refuses it") {
  Cluster c;
  c.add("n1");
  c.add("n2");
  Doppeld& a = *c.nodes[0];
  Doppeld& b = *c.nodes[1];
  REQUIRE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms));
  for (int i = 0; i < 20; ++i) {
    REQUIRE(a.request("PUT", "/v1/twins/s-" + std::to_string(i), "{}").status / 100 == 2);
  }
  // Eight clients write twins of b's own partitions through b, before, during and after the
  // pause: what b has queued or in flight when it stops is refused by the fence when it resumes.
  const auto mine = served(b);
  std::vector<std::string> own;
  for (int i = 0; own.size() < 8 && i < 100000; ++i) {
    const std::string id = "own-" + std::to_string(i);
    if (mine.count(doppel::twins::partition_of(id)) != 0) own.push_back(id);
  }
  REQUIRE(own.size() == 8);
  for (const auto& id : own) REQUIRE(b.request("PUT", "/v1/twins/" + id, "{}").status / 100 == 2);
  std::atomic<bool> stop_writers{false};
  std::mutex mu;
  std::map<std::string, std::set<int>> refused;  // twin -> values b answered 503 fenced
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> writers;
  for (const auto& id : own) {
    writers.emplace_back([&, id] {
      for (int n = 1; !stop_writers.load(); ++n) {
        auto r = b.patch_desired(id, {{"n", n}});
        if (r.status == 200) {
          ++acknowledged;
        } else if (r.body.is_object() &&
                   r.body.value("type", std::string()) == "urn:doppel:problem:fenced") {
          std::lock_guard lock(mu);
          refused[id].insert(n);
        }
      }
    });
  }
  // Whatever fails below, b runs again and the clients stop before the cluster goes away.
  struct Cleanup {
    std::function<void()> run;
    ~Cleanup() { run(); }
  } cleanup{[&] {
    ::kill(b.pid(), SIGCONT);
    stop_writers.store(true);
    for (auto& t : writers) {
      if (t.joinable()) t.join();
    }
  }};
  REQUIRE(eventually([&] { return acknowledged.load() >= 50; }, 30s, 10ms));
  ::kill(b.pid(), SIGSTOP);
  const auto paused_at = std::chrono::steady_clock::now();
  // a takes everything once b's leases expire, and writes every twin.
  REQUIRE_MESSAGE(eventually([&] { return served(a).size() == 1024; }, 30s, 50ms),
                  a.get("/v1/cluster").body.dump(), "\n",
                  a.log().substr(a.log().size() > 6000 ? a.log().size() - 6000 : 0));
  MESSAGE("the paused node's partitions taken over after ",
          std::chrono::duration<double>(std::chrono::steady_clock::now() - paused_at).count(),
          " s");
  for (int i = 0; i < 20; ++i) {
    auto r = a.patch_desired("s-" + std::to_string(i), {{"after", true}});
    REQUIRE_MESSAGE(r.status == 200, r.body.dump());
  }
  ::kill(b.pid(), SIGCONT);
  // Resumed, it answers through the owner: every twin has the write made while it was paused.
  for (int i = 0; i < 20; ++i) {
    auto r = b.get("/v1/twins/s-" + std::to_string(i));
    REQUIRE_MESSAGE(r.status == 200, r.body.dump());
    CHECK(r.body["desired"]["after"] == true);
  }
  // It rejoins and takes its share back, and still nothing goes back in time.
  REQUIRE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms));
  for (int i = 0; i < 20; ++i) {
    auto r = b.get("/v1/twins/s-" + std::to_string(i));
    REQUIRE(r.status == 200);
    CHECK(r.body["desired"]["after"] == true);
  }
  cleanup.run();
  // No value the fence refused is ever visible: not in the twin, not in its change feed.
  size_t refused_count = 0;
  for (const auto& id : own) {
    const std::set<int>& values = refused[id];
    refused_count += values.size();
    auto twin = a.get("/v1/twins/" + id);
    REQUIRE(twin.status == 200);
    CHECK(values.count(twin.body["desired"]["n"].get<int>()) == 0);
    auto events = a.get("/v1/events?limit=1000&kind=desired.updated&twin=" + id);
    REQUIRE(events.status == 200);
    int last = 0;
    for (const auto& e : events.body["events"]) {
      const int n = e["patch"]["n"].get<int>();
      CHECK_MESSAGE(values.count(n) == 0, id, " shows the refused value ", n);
      CHECK(n > last);  // never back in time
      last = n;
    }
  }
  MESSAGE("writes fenced on the paused node: ",
          metric(b.text("/metrics"), "doppel_fenced_writes_total"), " (", refused_count,
          " answered 503 fenced to its clients); ", acknowledged.load(), " acknowledged");
}

TEST_CASE("a node joins and a node leaves (SIGTERM) under load: no 5xx, nothing lost") {
  Cluster c;
  Doppeld& a = c.add("n1");
  Doppeld& b = c.add("n2");
  REQUIRE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms));

  // 6 writers through n1, which forwards to whichever node owns each twin at that moment.
  std::mutex mu;
  std::map<std::string, int> acked;
  std::map<int, int> other;  // status -> count, for anything but 200
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 6; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 1; !stop.load(); ++n) {
        const std::string id = "j-" + std::to_string(w) + "-" + std::to_string(n % 10);
        auto r = a.patch_desired(id, {{"n", n}});
        std::lock_guard lock(mu);
        if (r.status == 200) {
          acked[id] = n;
        } else {
          ++other[r.status];
          MESSAGE("answer ", r.status, ": ", r.body.dump());
        }
      }
    });
  }
  std::this_thread::sleep_for(1s);
  Doppeld& d = c.add("n3");  // joins: n1 and n2 hand it its share under load
  REQUIRE(eventually([&] { return c.settled(a, 3); }, 30s, 100ms));
  CHECK(served(d).size() >= 300);
  std::this_thread::sleep_for(1s);
  CHECK(b.stop() == 0);  // leaves: drains, gives its partitions back
  REQUIRE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms));
  std::this_thread::sleep_for(1s);
  stop.store(true);
  for (auto& t : writers) t.join();
  CHECK(other.empty());  // every request answered 200: forwarded, or retried at the new owner
  for (const auto& [id, n] : acked) {
    auto got = d.get("/v1/twins/" + id);
    REQUIRE(got.status == 200);
    CHECK_MESSAGE(got.body["desired"]["n"].get<int>() >= n, id);
  }
  CHECK(acked.size() == 60);
  const std::string m = b.log();
  CHECK(m.find("left; its partitions are free") != std::string::npos);
}

TEST_CASE("PostgreSQL restarted under the cluster: every node recovers without a restart") {
  Cluster c;
  Doppeld& a = c.add("n1");
  Doppeld& b = c.add("n2");
  REQUIRE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms));
  REQUIRE(a.request("PUT", "/v1/twins/pg-1", "{}").status / 100 == 2);
  c.server.stop();
  std::this_thread::sleep_for(3s);  // longer than a lease: every belief has ended
  CHECK(a.patch_desired("pg-1", {{"v", 1}}).status == 503);
  c.server.start();
  // Both nodes take their partitions again and serve writes through either node.
  REQUIRE_MESSAGE(eventually([&] { return c.settled(a, 2); }, 60s, 100ms),
                  a.get("/v1/cluster").body.dump());
  REQUIRE(eventually(
      [&] {
        return b.patch_desired("pg-1", {{"v", 2}}).status == 200;
      },
      30s, 100ms));
  auto got = a.get("/v1/twins/pg-1");
  REQUIRE(got.status == 200);
  CHECK(got.body["desired"]["v"] == 2);
  CHECK(a.running());
  CHECK(b.running());
}

TEST_CASE("a job runs on one node, reaches every node's twins, and survives its node's kill -9") {
  constexpr int kDevices = 48;
  Cluster c;
  // A command whose result reached no node (its twin's owner was dead) is delivered again soon.
  const std::vector<std::string> quick_redelivery{"--command-ack-timeout-s", "2"};
  c.add("n1", quick_redelivery);
  c.add("n2", quick_redelivery);
  c.add("n3", quick_redelivery);
  REQUIRE(eventually([&] { return c.settled(*c.nodes[0], 3); }, 30s, 100ms));
  Process sim = c.fleet(kDevices, 2);

  // The job's node serves its id's partition; it is created through another node.
  const std::string job = "eco-cluster";
  const uint32_t partition = doppel::twins::partition_of(job);
  size_t owner = 3;
  for (size_t i = 0; i < 3; ++i) {
    if (served(*c.nodes[i]).count(partition) != 0) owner = i;
  }
  REQUIRE(owner < 3);
  Doppeld& via = *c.nodes[(owner + 1) % 3];
  Doppeld& other = *c.nodes[(owner + 2) % 3];
  const json body = {{"id", job},
                     {"target", {{"query", "id LIKE 'sim-%'"}}},
                     {"action", {{"desired", {{"mode", "eco"}}}}},
                     {"rate_per_s", 12}};
  auto created = via.request("POST", "/v1/jobs", body.dump());
  REQUIRE_MESSAGE(created.status == 201, created.body.dump());
  CHECK(created.body["total"] == kDevices);
  CHECK(other.request("POST", "/v1/jobs", body.dump()).status == 409);
  // Exactly one node runs it.
  double running = 0;
  for (auto& n : c.nodes) running += metric(n->text("/metrics"), "doppel_jobs_running");
  CHECK(running == 1);

  // A command to every device, through every node: some are in flight when the node dies.
  for (int i = 0; i < kDevices; ++i) {
    auto sent = c.nodes[static_cast<size_t>(i) % 3]->request(
        "POST", "/v1/twins/" + sim_id(i) + "/commands",
        json{{"name", "calibrate"}, {"args", {{"n", i}}}}.dump());
    REQUIRE_MESSAGE(sent.status == 202, sent.body.dump());
  }

  // Part of the way, its node is killed: another takes the partition, and with it the job.
  REQUIRE(eventually(
      [&] { return via.get("/v1/jobs/" + job).body["counts"]["succeeded"].get<int>() >= 12; }, 60s,
      100ms));
  REQUIRE(via.get("/v1/jobs/" + job).body["counts"]["pending"].get<int>() > 0);
  c.nodes[owner]->kill9();
  json got;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        got = other.get("/v1/jobs/" + job).body;
                        return got["status"] == "completed";
                      },
                      90s, 200ms),
                  "the job did not complete: ", got.dump());
  CHECK(got["counts"]["succeeded"] == kDevices);
  running = metric(via.text("/metrics"), "doppel_jobs_running") +
            metric(other.text("/metrics"), "doppel_jobs_running");
  CHECK(running == 0);

  // Every twin changed once, by the job: one desired.updated each, desired version 1.
  std::map<std::string, int> per_twin;
  uint64_t after = 0;
  while (true) {
    auto r =
        via.get("/v1/events?limit=1000&kind=desired.updated&after_seq=" + std::to_string(after));
    REQUIRE(r.status == 200);
    for (const auto& e : r.body["events"]) {
      CHECK(e["cause"]["job"] == job);
      ++per_twin[e["twin"].get<std::string>()];
    }
    const uint64_t next = r.body["next_after_seq"].get<uint64_t>();
    if (next == after || r.body["events"].empty()) break;
    after = next;
  }
  CHECK(per_twin.size() == kDevices);
  for (const auto& [twin, n] : per_twin) CHECK_MESSAGE(n == 1, twin);
  for (const json& t : other.list_all()) {
    CHECK(t["desired"]["mode"] == "eco");
    CHECK(t["reported"]["mode"] == "eco");
    CHECK(t["desired_version"] == 1);
  }

  // Every command reached its device and ended: none is left queued or sent on the dead node.
  std::string unfinished;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        unfinished.clear();
                        for (int i = 0; i < kDevices; ++i) {
                          const std::string twin = sim_id(i);
                          auto list = via.get("/v1/twins/" + twin + "/commands");
                          if (list.status != 200 || list.body["items"].size() != 1 ||
                              list.body["items"][0]["status"] != "succeeded") {
                            unfinished += twin + " " + list.body.dump() + "\n";
                          }
                        }
                        return unfinished.empty();
                      },
                      60s, 500ms),
                  "commands not succeeded:\n", unfinished);

  // Cancelling through any node reaches the job's (new) node: a job that ended says so.
  CHECK(via.request("POST", "/v1/jobs/" + job + "/cancel").status == 409);
  auto second = via.request("POST", "/v1/jobs",
                            json{{"target", {{"twins", {sim_id(1), sim_id(2)}}}},
                                 {"action", {{"desired", {{"mode", "eco"}}}}},
                                 {"rate_per_s", 1}}
                                .dump());
  REQUIRE_MESSAGE(second.status == 201, second.body.dump());
  const std::string id = second.body["id"];
  auto cancelled = other.request("POST", "/v1/jobs/" + id + "/cancel");
  CHECK_MESSAGE(cancelled.status == 200, cancelled.body.dump());
  CHECK(cancelled.body["status"] == "cancelled");
  sim.signal(SIGINT);
  CHECK(sim.wait_exit(15s));
}

TEST_CASE("a cluster node refuses to start without a shared broker, or with certificates") {
  TempDir dir{"doppel-cluster-refused-"};
  const std::string secret = dir.file("secret");
  std::ofstream(secret) << "a-test-secret-of-more-than-16-bytes\n";
  // Refused before the store is opened: nothing listens at this address.
  const std::vector<std::string> cluster = {DOPPELD_PATH,
                                            "--data",
                                            dir.file("data"),
                                            "--store",
                                            "postgresql://127.0.0.1:1/none",
                                            "--cluster",
                                            "--node-id",
                                            "n1",
                                            "--advertise",
                                            "http://127.0.0.1:1",
                                            "--cluster-secret-file",
                                            secret};
  auto refused = [&](std::vector<std::string> extra, const std::string& log_name) {
    std::vector<std::string> argv = cluster;
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p(argv, dir.file(log_name));
    int status = 0;
    REQUIRE(p.wait_exit(10s, &status));
    CHECK(WEXITSTATUS(status) == 1);
    return p.log();
  };
  CHECK(refused({}, "no-broker.log").find("--cluster needs --broker") != std::string::npos);
  CHECK(refused({"--broker", "tcp://127.0.0.1:1", "--device-auth", "x509"}, "x509.log")
            .find("--device-auth x509 needs the embedded broker") != std::string::npos);
  CHECK(refused({"--broker", "tcp://127.0.0.1:1", "--device-auth"}, "auth.log")
            .find("--broker-username and --broker-password") != std::string::npos);
}

TEST_CASE(
    "device credentials on the shared broker: issued through one node, revoked through "
    "another") {
  Cluster c(true);
  Doppeld& a = c.add("n1");
  Doppeld& b = c.add("n2");
  REQUIRE_MESSAGE(eventually([&] { return c.settled(a, 2); }, 30s, 100ms),
                  a.get("/v1/cluster").body.dump());
  const std::string uri = c.broker.uri();

  // Issued through n1, whichever node owns the twin: the password is shown once.
  std::map<std::string, std::string> passwords;
  for (const std::string id : {"cred-1", "cred-2"}) {
    auto put = a.request("PUT", "/v1/twins/" + id, R"({"credentials": true})");
    REQUIRE_MESSAGE(put.status == 201, put.body.dump());
    REQUIRE(put.body["credentials"]["username"] == id);
    passwords[id] = put.body["credentials"]["password"].get<std::string>();
  }
  CHECK(passwords["cred-1"] != passwords["cred-2"]);

  // The device connects with it; its owner hears it, and every node answers with its state.
  TestDevice dev("cred-1", uri, doppel::twins::Encoding::kJson, "twins",
                 {"cred-1", passwords["cred-1"], ""});
  dev.connect();
  dev.publish("reported", R"({"state":{"fw":1}})");
  for (Doppeld* node : {&a, &b}) {
    CHECK(eventually([&] { return node->get("/v1/twins/cred-1").body["reported"]["fw"] == 1; }, 10s,
                     20ms));
  }
  // A desired change through n2 reaches it.
  REQUIRE(b.patch_desired("cred-1", {{"fw", 2}}).status == 200);
  REQUIRE(!dev.wait_for("delta", 1, 10s).empty());

  // Its rights end at its own twin: a report forged for cred-2 is dropped by the broker, and
  // subscribing to another twin's topics is refused.
  dev.publish_topic("twins/cred-2/reported", R"({"state":{"forged":true}})");
  CHECK(!dev.try_subscribe("twins/cred-2/#"));
  TestDevice other("cred-2", uri, doppel::twins::Encoding::kJson, "twins",
                   {"cred-2", passwords["cred-2"], ""});
  other.connect();
  other.publish("reported", R"({"state":{"own":true}})");
  REQUIRE(eventually([&] { return a.get("/v1/twins/cred-2").body["reported"]["own"] == true; }, 10s,
                     20ms));
  CHECK(!a.get("/v1/twins/cred-2").body["reported"].contains("forged"));
  // Wrong passwords, another device's password, and anonymous clients are refused.
  TestDevice wrong("cred-1", uri, doppel::twins::Encoding::kJson, "twins", {"cred-1", "nope", ""});
  CHECK(!wrong.try_connect());
  TestDevice swapped("cred-1", uri, doppel::twins::Encoding::kJson, "twins",
                     {"cred-1", passwords["cred-2"], ""});
  CHECK(!swapped.try_connect());
  TestDevice anonymous("anon", uri);
  CHECK(!anonymous.try_connect());

  // Revoked through n2 (deleting the twin): the connection ends and cannot come back; the other
  // device is untouched.
  REQUIRE(b.request("DELETE", "/v1/twins/cred-1").status == 204);
  CHECK(eventually([&] { return !dev.connected(); }, 10s));
  TestDevice again("cred-1", uri, doppel::twins::Encoding::kJson, "twins",
                   {"cred-1", passwords["cred-1"], ""});
  CHECK(!again.try_connect());
  other.publish("reported", R"({"state":{"still":"here"}})");
  CHECK(eventually([&] { return b.get("/v1/twins/cred-2").body["reported"]["still"] == "here"; },
                   10s, 20ms));
  // A new password through n2 replaces the one issued through n1; both are in the twin's feed.
  auto rotated = b.request("PUT", "/v1/twins/cred-2", R"({"credentials": true})");
  REQUIRE(rotated.status == 200);
  TestDevice old_password("cred-2", uri, doppel::twins::Encoding::kJson, "twins",
                          {"cred-2", passwords["cred-2"], ""});
  CHECK(!old_password.try_connect());
  auto feed = a.get("/v1/events?twin=cred-2&kind=credentials.changed");
  REQUIRE(feed.status == 200);
  CHECK(feed.body["events"].size() == 2);  // issued through n1, issued again through n2
}
