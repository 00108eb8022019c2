// kill -9 of doppeld while desired changes are being acknowledged: after a restart every
// acknowledged change is there, and the fleet still converges.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include <signal.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("every acknowledged desired change survives kill -9 and still converges") {
  // A delta whose publish the kill cut off is re-sent by the reconcile retry: keep it short.
  Stack stack({"--reconcile-timeout-s", "1"});
  auto& [dir, broker, gateway] = stack;
  constexpr int kDevices = 20;
  Process sim = start_sim(broker.uri(), dir.file("sim.log"),
                          {"--devices", std::to_string(kDevices), "--interval-s", "1",
                           "--delta-delay-s", "0.02", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gateway.list_all().size() == kDevices; }, 30s));

  // Four writers raise a counter per device; the last value each got a 200 for is recorded.
  std::mutex mu;
  std::map<std::string, int> acked;
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 1; !stop.load(); ++n) {
        for (int d = w; d < kDevices && !stop.load(); d += 4) {
          const std::string id = sim_id(d);
          auto r = gateway.patch_desired(id, {{"counter", n}});
          if (r.status == 200) {
            std::lock_guard lock(mu);
            acked[id] = n;
            acknowledged.fetch_add(1);
          }
        }
      }
    });
  }
  REQUIRE(eventually([&] { return acknowledged.load() >= 300; }, 60s, 5ms));
  gateway.kill9();  // while PATCHes are in flight
  stop.store(true);
  for (auto& t : writers) t.join();
  MESSAGE("acknowledged before kill -9: ", acknowledged.load());

  gateway.start();
  std::map<std::string, int> acked_copy;
  {
    std::lock_guard lock(mu);
    acked_copy = acked;
  }
  int lost = 0;
  for (const auto& [id, n] : acked_copy) {
    auto r = gateway.get("/v1/twins/" + id);
    REQUIRE(r.status == 200);
    // The acknowledged value, or a later one whose answer the kill cut off: never an older one.
    const int have = r.body["desired"].value("counter", 0);
    if (have < n) ++lost;
    CHECK_MESSAGE(have >= n, id, ": acknowledged ", n, " but found ", have);
    CHECK(r.body["desired_version"].get<int>() >= n);
  }
  CHECK(lost == 0);

  const bool converged = eventually(
      [&] {
        auto twins = gateway.list_all();
        if (twins.size() != kDevices) return false;
        for (auto& t : twins) {
          if (!t["delta"].empty()) return false;
        }
        return true;
      },
      45s, 200ms);
  CHECK_MESSAGE(converged, "not converged after restart");
  sim.signal(SIGINT);
  sim.wait_exit(15s);
}
