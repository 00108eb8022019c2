// With short intervals, devices that go silent become stale — and only they — and are fresh
// again when they speak.
#include <doctest/doctest.h>

#include <signal.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("silent devices become stale, only they, and recover when they speak") {
  Stack stack;
  auto& gateway = stack.gateway;
  // 0.3 s reports: stale after 3 x 0.3 = 0.9 s of silence.
  Process talkers = start_sim(stack.broker.uri(), stack.dir.file("talkers.log"),
                              {"--devices", "12", "--interval-s", "0.3", "--progress-s", "0"});
  Process quiet = start_sim(
      stack.broker.uri(), stack.dir.file("quiet.log"),
      {"--devices", "4", "--id-prefix", "quiet-", "--interval-s", "0.3", "--silent-fraction", "1",
       "--silent-after-s", "1.5", "--silent-for-s", "5", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gateway.list_all().size() == 16; }, 30s));

  auto states = [&] {
    std::map<std::string, std::string> s;
    for (auto& t : gateway.list_all()) s[t["id"]] = t["liveness"]["state"];
    return s;
  };
  auto exactly_quiet_stale = [&](const std::map<std::string, std::string>& s) {
    if (s.size() != 16) return false;
    for (const auto& [id, state] : s) {
      const bool quiet_one = id.rfind("quiet-", 0) == 0;
      if ((state == "stale") != quiet_one) return false;
    }
    return true;
  };
  std::map<std::string, std::string> seen;
  REQUIRE_MESSAGE(eventually([&] { return exactly_quiet_stale(seen = states()); }, 15s),
                  "expected exactly the quiet devices stale");
  // It stays that way while they are silent (the talkers never go stale).
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(200ms);
    seen = states();
    if (seen.begin()->second == "fresh" && seen.rbegin()->second == "fresh") break;  // recovered
    CHECK(exactly_quiet_stale(seen));
  }
  const std::string metrics = gateway.text("/metrics");
  CHECK(metrics.find("doppel_twin_events_total{event=\"twin.stale\"} 4") != std::string::npos);
  CHECK(gateway.log().find("twin.stale twin=quiet-") != std::string::npos);

  // When they speak again they are fresh.
  CHECK(eventually(
      [&] {
        auto s = states();
        for (const auto& [id, state] : s) {
          if (state != "fresh") return false;
        }
        return s.size() == 16;
      },
      20s, 200ms));
  CHECK(gateway.text("/metrics").find("doppel_twin_events_total{event=\"twin.fresh\"} 4") !=
        std::string::npos);
  talkers.signal(SIGINT);
  quiet.signal(SIGINT);
  talkers.wait_exit(10s);
  quiet.wait_exit(10s);
}
