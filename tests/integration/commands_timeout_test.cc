// A device that never answers ends in timed_out after max_attempts deliveries; a command whose
// TTL passes ends in expired.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("a device that never answers gets max_attempts deliveries, then timed_out") {
  Stack stack({"--command-ack-timeout-s", "0.2", "--command-max-attempts", "3"});
  auto& gateway = stack.gateway;
  TestDevice dev("mute-1", stack.broker.uri());
  dev.connect();
  dev.publish("status", R"({"state":"online"})");
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/mute-1").status == 200; }, 10s));
  auto r = gateway.request("POST", "/v1/twins/mute-1/commands", R"({"name":"ping"})");
  REQUIRE(r.status == 202);
  const std::string id = r.body["id"];
  json c;
  REQUIRE(eventually(
      [&] {
        c = gateway.get("/v1/twins/mute-1/commands/" + id).body;
        return c["status"] == "timed_out";
      },
      15s));
  CHECK(c["attempts"] == 3);
  CHECK(dev.deliveries()[id] == 3);
  CHECK(c["error"] == "no result after 3 deliveries");
  // A late answer changes nothing.
  dev.publish("commands/" + id + "/result", R"({"status":"succeeded"})");
  dev.publish("reported", R"({"state":{"x":1}})");  // processed after the result
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/mute-1").body["reported"].contains("x"); },
                     10s));
  CHECK(gateway.get("/v1/twins/mute-1/commands/" + id).body["status"] == "timed_out");
}

TEST_CASE("a command whose TTL passes while the device is away ends expired") {
  Stack stack;
  auto& gateway = stack.gateway;
  auto r = gateway.request("POST", "/v1/twins/away-1/commands", R"({"name":"x","ttl_s":0.3})");
  REQUIRE(r.status == 202);
  const std::string id = r.body["id"];
  CHECK(gateway.get("/v1/twins/away-1/commands/" + id).body["status"] == "queued");
  json c;
  REQUIRE(eventually(
      [&] {
        c = gateway.get("/v1/twins/away-1/commands/" + id).body;
        return c["status"] == "expired";
      },
      10s));
  CHECK(c["error"] == "ttl passed while queued");
  CHECK(c["attempts"] == 0);
  CHECK(c["history"].size() == 2);
}
