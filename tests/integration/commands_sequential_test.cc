// 20 simulated devices x 10 commands: every command succeeds, strictly in order under the
// sequential strategy.
#include <doctest/doctest.h>

#include <signal.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("20 devices x 10 commands all succeed in order under sequential") {
  Stack stack;
  auto& gateway = stack.gateway;
  Process sim = start_sim(
      stack.broker.uri(), stack.dir.file("sim.log"),
      {"--devices", "20", "--interval-s", "2", "--command-delay-s", "0.01", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gateway.list_all().size() == 20; }, 30s));

  std::map<std::string, std::vector<std::string>> ids;
  for (int n = 0; n < 10; ++n) {
    for (int d = 0; d < 20; ++d) {
      const std::string id = sim_id(d);
      auto r = gateway.request("POST", "/v1/twins/" + id + "/commands",
                               json{{"name", "step"}, {"args", {{"n", n}}}}.dump());
      REQUIRE_MESSAGE(r.status == 202, r.body.dump());
      ids[id].push_back(r.body["id"].get<std::string>());
    }
  }

  std::map<std::string, json> lists;
  const bool done = eventually(
      [&] {
        for (int d = 0; d < 20; ++d) {
          const std::string id = sim_id(d);
          auto r = gateway.get("/v1/twins/" + id + "/commands?status=succeeded");
          if (r.status != 200 || r.body["items"].size() != 10) return false;
          lists[id] = r.body["items"];
        }
        return true;
      },
      60s, 250ms);
  REQUIRE_MESSAGE(done, "not all commands succeeded");
  for (const auto& [device, items] : lists) {
    CAPTURE(device);
    int64_t previous_finish = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      const json& c = items[k];
      CHECK(c["id"] == ids[device][k]);  // FIFO
      CHECK(c["args"]["n"] == static_cast<int>(k));
      CHECK(c["attempts"] == 1);
      const json& h = c["history"];
      REQUIRE(h.size() == 3);
      CHECK(h[1]["status"] == "sent");
      CHECK(h[2]["status"] == "succeeded");
      // Sequential: sent only after the previous one finished.
      CHECK(h[1]["at"].get<int64_t>() >= previous_finish);
      previous_finish = h[2]["at"].get<int64_t>();
      CHECK(c["result"]["command"] == "step");
    }
  }
  const std::string metrics = gateway.text("/metrics");
  CHECK(metrics.find("doppel_command_transitions_total{status=\"succeeded\"} 200") !=
        std::string::npos);
  CHECK(metrics.find("doppel_commands_unfinished{status=\"sent\"} 0") != std::string::npos);
  sim.signal(SIGINT);
  sim.wait_exit(15s);
}
