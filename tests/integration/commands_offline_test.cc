// Commands enqueued while a device is offline wait, and are delivered when it comes back.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("commands wait for an offline device and are delivered on its birth") {
  Stack stack;
  auto& gateway = stack.gateway;
  TestDevice dev("off-1", stack.broker.uri());
  dev.connect();
  dev.answer_commands(doppel::twins::ResultStatus::kSucceeded);
  dev.publish("status", R"({"state":"online"})");
  dev.publish("status", R"({"state":"offline"})");  // what its last will says
  REQUIRE(eventually(
      [&] { return gateway.get("/v1/twins/off-1").body["connection"]["state"] == "offline"; },
      10s));

  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = gateway.request("POST", "/v1/twins/off-1/commands",
                             json{{"name", "c" + std::to_string(i)}}.dump());
    REQUIRE(r.status == 202);
    CHECK(r.body["status"] == "queued");
    ids.push_back(r.body["id"]);
  }
  auto queued = gateway.get("/v1/twins/off-1/commands?status=queued");
  CHECK(queued.body["items"].size() == 3);
  CHECK(dev.deliveries().empty());
  CHECK(gateway.get("/v1/twins/off-1").body["commands"]["queued"] == 3);

  dev.publish("status", R"({"state":"online"})");
  REQUIRE(eventually(
      [&] {
        return gateway.get("/v1/twins/off-1/commands?status=succeeded").body["items"].size() == 3;
      },
      10s));
  auto all = gateway.get("/v1/twins/off-1/commands").body["items"];
  REQUIRE(all.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(all[i]["id"] == ids[i]);
    CHECK(all[i]["attempts"] == 1);
  }
  CHECK(dev.deliveries().size() == 3);
}
