// The command API: a full queue gives 429 and loses nothing; bad bodies give 400 problem+json;
// idempotency keys; cancel.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("a full queue answers 429 and keeps everything it holds; bad bodies are 400") {
  Stack stack({"--command-queue-max", "5"});
  auto& gateway = stack.gateway;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = gateway.request("POST", "/v1/twins/q-1/commands", json{{"name", "n"}}.dump());
    REQUIRE(r.status == 202);
    ids.push_back(r.body["id"]);
  }
  auto full = gateway.request("POST", "/v1/twins/q-1/commands", R"({"name":"one-too-many"})");
  CHECK(full.status == 429);
  CHECK(full.content_type == "application/problem+json");
  CHECK(full.body["type"] == "urn:doppel:problem:queue_full");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"args":{}})", "invalid_argument"},
      {R"({"name":5})", "invalid_argument"},
      {R"({"name":""})", "invalid_argument"},
      {R"({"name":"x","args":[1]})", "invalid_argument"},
      {R"({"name":"x","ttl_s":-1})", "invalid_argument"},
      {R"({"name":"x","priority":1})", "invalid_argument"},
      {R"({"name":"x")", "malformed"},
      {R"([])", "invalid_argument"},
  };
  for (const auto& [body, type] : bad) {
    CAPTURE(body);
    auto r = gateway.request("POST", "/v1/twins/q-1/commands", body);
    CHECK(r.status == 400);
    CHECK(r.body["type"] == "urn:doppel:problem:" + type);
  }
  auto wrong_type = gateway.request("POST", "/v1/twins/q-1/commands", R"({"name":"x"})",
                                    {{"Content-Type", "text/plain"}});
  CHECK(wrong_type.status == 415);

  auto list = gateway.get("/v1/twins/q-1/commands");
  REQUIRE(list.body["items"].size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(list.body["items"][i]["id"] == ids[i]);
  CHECK(gateway.get("/v1/twins/q-1/commands?status=bogus").status == 400);
  CHECK(gateway.get("/v1/twins/q-1/commands/nope").status == 404);
  CHECK(gateway.get("/v1/twins/nobody/commands").status == 404);

  // Paging.
  auto page = gateway.get("/v1/twins/q-1/commands?limit=2");
  REQUIRE(page.body["items"].size() == 2);
  auto next = gateway.get("/v1/twins/q-1/commands?limit=10&cursor=" +
                          page.body["next_cursor"].get<std::string>());
  CHECK(next.body["items"].size() == 3);
  CHECK(next.body["items"][0]["id"] == ids[2]);
}

TEST_CASE("an idempotency key returns the first command; cancel ends an unfinished one") {
  Stack stack;
  auto& gateway = stack.gateway;
  auto a = gateway.request("POST", "/v1/twins/i-1/commands",
                           R"({"name":"reboot","idempotency_key":"op-42"})");
  auto b = gateway.request("POST", "/v1/twins/i-1/commands",
                           R"({"name":"reboot","idempotency_key":"op-42"})");
  REQUIRE(a.status == 202);
  REQUIRE(b.status == 202);
  CHECK(a.body["id"] == b.body["id"]);
  CHECK(gateway.get("/v1/twins/i-1/commands").body["items"].size() == 1);

  const std::string id = a.body["id"];
  auto cancel = gateway.request("DELETE", "/v1/twins/i-1/commands/" + id);
  CHECK(cancel.status == 200);
  CHECK(cancel.body["status"] == "cancelled");
  CHECK(gateway.request("DELETE", "/v1/twins/i-1/commands/" + id).status == 409);
  const std::string metrics = gateway.text("/metrics");
  CHECK(metrics.find("doppel_command_transitions_total{status=\"cancelled\"} 1") !=
        std::string::npos);
  CHECK(metrics.find("doppel_commands_unfinished{status=\"queued\"} 0") != std::string::npos);
}
