// Crash safety under load: with devices reporting and operators changing desired state and
// sending commands, doppeld is killed with SIGKILL at random moments and restarted, several
// times. Afterwards every acknowledged mutation is present, every command ends in a terminal
// state exactly once (no duplicate, none resurrected), and every twin converges.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

constexpr int kDevices = 12;
constexpr int kKills = 4;

bool terminal(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "rejected" || s == "expired" ||
         s == "timed_out" || s == "cancelled";
}

// A command's history must be queued, then sent (once), then one terminal state.
bool valid_history(const json& history) {
  if (history.empty() || history[0]["status"] != "queued") return false;
  bool finished = false;
  for (size_t i = 1; i < history.size(); ++i) {
    const std::string s = history[i]["status"];
    if (finished) return false;  // nothing after a terminal state: no resurrection
    if (terminal(s)) {
      finished = true;
    } else if (s != "sent" || i != 1) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("kill -9 at random moments under load loses no acknowledged mutation") {
  Stack stack({"--command-ack-timeout-s", "1", "--reconcile-timeout-s", "1"});
  auto& gw = stack.gateway;
  Process sim =
      start_sim(stack.broker.uri(), stack.dir.file("sim.log"),
                {"--devices", std::to_string(kDevices), "--interval-s", "0.2", "--delta-delay-s",
                 "0.01", "--command-delay-s", "0.01", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gw.list_all().size() == kDevices; }, 30s));

  std::mutex mu;
  std::map<std::string, int> acked_desired;                 // device -> last acknowledged value
  std::map<std::string, std::set<std::string>> acked_cmds;  // device -> command ids
  std::atomic<bool> stop{false};
  std::atomic<int> mutations{0};

  auto desired_writer = [&](int first) {
    for (int n = 1; !stop.load(); ++n) {
      for (int d = first; d < kDevices && !stop.load(); d += 2) {
        const std::string id = sim_id(d);
        auto r = gw.patch_desired(id, {{"counter", n}});
        if (r.status == 200) {
          std::lock_guard lock(mu);
          acked_desired[id] = n;
          mutations.fetch_add(1);
        }
      }
    }
  };
  auto commander = [&] {
    std::mt19937 rng(7);
    for (int n = 0; !stop.load(); ++n) {
      const std::string id = sim_id(static_cast<int>(rng() % kDevices));
      auto r = gw.request("POST", "/v1/twins/" + id + "/commands",
                          json{{"name", "job"}, {"args", {{"n", n}}}}.dump());
      if (r.status == 202) {
        std::lock_guard lock(mu);
        acked_cmds[id].insert(r.body["id"].get<std::string>());
        mutations.fetch_add(1);
      }
      std::this_thread::sleep_for(5ms);
    }
  };
  std::vector<std::thread> writers;
  writers.emplace_back(desired_writer, 0);
  writers.emplace_back(desired_writer, 1);
  writers.emplace_back(commander);

  std::mt19937 rng(12345);
  int restarts = 0;
  for (int k = 0; k < kKills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400 + rng() % 1200));
    gw.kill9();
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
    gw.start();
    ++restarts;
  }
  std::this_thread::sleep_for(500ms);
  stop.store(true);
  for (auto& t : writers) t.join();

  // 1. Every acknowledged desired change is there (the value, or a later one).
  int lost = 0;
  for (const auto& [id, n] : acked_desired) {
    const int have = gw.get("/v1/twins/" + id).body["desired"].value("counter", 0);
    if (have < n) ++lost;
  }
  // 2. Every acknowledged command exists, ends terminal, with a valid history, once.
  int commands = 0;
  int missing = 0;
  int bad_history = 0;
  for (const auto& [id, ids] : acked_cmds) {
    commands += static_cast<int>(ids.size());
    json items;
    const bool done = eventually(
        [&] {
          items = gw.get("/v1/twins/" + id + "/commands?limit=1000").body["items"];
          for (const auto& c : items) {
            if (!terminal(c["status"])) return false;
          }
          return true;
        },
        60s, 250ms);
    CHECK_MESSAGE(done, id, ": unfinished commands remain");
    std::set<std::string> seen;
    for (const auto& c : items) {
      CHECK_MESSAGE(seen.insert(c["id"].get<std::string>()).second, "duplicate command ", c["id"]);
      if (!valid_history(c["history"])) {
        ++bad_history;
        MESSAGE("bad history: ", c.dump());
      }
    }
    for (const auto& cid : ids) missing += seen.count(cid) == 0 ? 1 : 0;
  }
  // 3. Every twin converges.
  const bool converged = eventually(
      [&] {
        for (int d = 0; d < kDevices; ++d) {
          if (!gw.get("/v1/twins/" + sim_id(d)).body["delta"].empty()) return false;
        }
        return true;
      },
      60s, 250ms);

  MESSAGE("mutations acknowledged: ", mutations.load(), " (", commands,
          " commands), restarts survived: ", restarts, ", desired changes lost: ", lost,
          ", commands missing: ", missing);
  CHECK(restarts == kKills);
  CHECK(mutations.load() > 50);
  CHECK(lost == 0);
  CHECK(missing == 0);
  CHECK(bad_history == 0);
  CHECK(converged);
  sim.signal(SIGINT);
  sim.wait_exit(15s);
}
