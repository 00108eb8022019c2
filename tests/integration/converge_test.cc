// 50 simulated devices connect and get twins; a desired change on each converges for all 50.
#include <doctest/doctest.h>

#include <signal.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("50 simulated devices get twins and every desired change converges") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;
  Process sim = start_sim(broker.uri(), dir.file("sim.log"),
                          {"--devices", "50", "--interval-s", "2", "--delta-delay-s", "0.05",
                           "--progress-s", "0", "--connect-rate", "200"});

  REQUIRE_MESSAGE(eventually(
                      [&] {
                        auto twins = gateway.list_all();
                        if (twins.size() != 50) return false;
                        for (auto& t : twins) {
                          if (t["connection"]["state"] != "online") return false;
                          if (!t["reported"].contains("battery")) return false;
                        }
                        return true;
                      },
                      30s),
                  "not all 50 devices got an online twin; sim log:\n", sim.log());

  for (int i = 0; i < 50; ++i) {
    const std::string id = sim_id(i);
    auto r = gateway.patch_desired(id, {{"setpoint", 20 + i}, {"fan", {{"speed", i % 4}}}});
    REQUIRE_MESSAGE(r.status == 200, id, " ", r.body.dump());
    CHECK(r.body["desired"]["setpoint"] == 20 + i);
    CHECK(r.etag == "\"" + std::to_string(r.body["desired_version"].get<int>()) + "\"");
  }

  std::vector<json> twins;
  const bool converged = eventually(
      [&] {
        twins = gateway.list_all();
        if (twins.size() != 50) return false;
        for (auto& t : twins) {
          if (!t["delta"].empty() || t["reconcile"]["state"] != "converged") return false;
        }
        return true;
      },
      30s, 200ms);
  CHECK_MESSAGE(
      converged, "twins did not converge; gateway log tail:\n",
      gateway.log().substr(gateway.log().size() > 4000 ? gateway.log().size() - 4000 : 0));
  for (auto& t : twins) {
    const int i = std::stoi(t["id"].get<std::string>().substr(4));
    CHECK(t["reported"]["setpoint"] == 20 + i);
    CHECK(t["reported"]["fan"]["speed"] == i % 4);
    CHECK(t["desired_version"] == 1);
    CHECK(t["metadata"]["desired"]["setpoint"]["version"] == 1);
  }
  sim.signal(SIGINT);
  CHECK(sim.wait_exit(15s));
  CHECK(gateway.stop() == 0);
}
