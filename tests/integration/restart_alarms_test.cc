// Stop the gateway, let deadlines pass, start it: the overdue alarms fire at start-up and
// nothing fires early.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("alarms that fall due while the gateway is down fire at start-up, none early") {
  Stack stack;
  auto& gateway = stack.gateway;
  for (int i = 0; i < 20; ++i) {
    const bool soon = i < 10;
    const std::string id = (soon ? "soon-" : "later-") + std::to_string(i);
    auto r = gateway.request("PUT", "/v1/twins/" + id,
                             json{{"stale_after_s", soon ? 1.0 : 600.0}}.dump());
    REQUIRE(r.status == 201);
    CHECK(r.body["liveness"]["state"] == "unknown");
  }
  CHECK(gateway.stop() == 0);
  std::this_thread::sleep_for(1500ms);  // the gateway is down while the deadlines pass

  gateway.start();
  std::vector<json> twins;
  const bool fired = eventually(
      [&] {
        twins = gateway.list_all();
        int stale = 0;
        for (auto& t : twins) stale += t["liveness"]["state"] == "stale" ? 1 : 0;
        return stale >= 10;
      },
      10s, 20ms);
  CHECK(fired);
  for (auto& t : twins) {
    const bool soon = t["id"].get<std::string>().rfind("soon-", 0) == 0;
    CHECK_MESSAGE((t["liveness"]["state"] == (soon ? "stale" : "unknown")), t["id"]);
  }
  const std::string metrics = gateway.text("/metrics");
  CHECK(metrics.find("doppel_alarms_fired_total 10") != std::string::npos);
  MESSAGE(metrics.substr(metrics.find("doppel_alarm_lateness_seconds_sum"), 80));
}
