// kill -9 with commands queued and sent-but-unanswered: after a restart none is lost, the sent
// one is re-delivered, and all finish exactly once in the outbox.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("commands survive kill -9: none lost, sent ones re-delivered, all finish") {
  Stack stack({"--command-ack-timeout-s", "1"});
  auto& gateway = stack.gateway;
  TestDevice dev("crash-1", stack.broker.uri());
  dev.connect();
  dev.publish("status", R"({"state":"online"})");
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/crash-1").status == 200; }, 10s));

  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = gateway.request("POST", "/v1/twins/crash-1/commands",
                             json{{"name", "job"}, {"args", {{"i", i}}}}.dump());
    REQUIRE(r.status == 202);
    ids.push_back(r.body["id"]);
  }
  REQUIRE(eventually([&] { return dev.deliveries().count(ids[0]) == 1; }, 10s));
  auto before = gateway.get("/v1/twins/crash-1/commands").body["items"];
  CHECK(before[0]["status"] == "sent");
  CHECK(before[1]["status"] == "queued");

  gateway.kill9();
  dev.answer_commands(doppel::twins::ResultStatus::kSucceeded);
  gateway.start();

  REQUIRE(eventually(
      [&] {
        return gateway.get("/v1/twins/crash-1/commands?status=succeeded").body["items"].size() == 5;
      },
      20s));
  auto after = gateway.get("/v1/twins/crash-1/commands").body["items"];
  REQUIRE(after.size() == 5);  // nothing lost, nothing duplicated
  for (size_t i = 0; i < 5; ++i) CHECK(after[i]["id"] == ids[i]);
  CHECK(dev.deliveries()[ids[0]] >= 2);  // the unanswered one came again
  CHECK(after[0]["attempts"].get<int>() >= 2);
}
