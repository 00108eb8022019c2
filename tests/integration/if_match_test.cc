// If-Match with a stale desired version gets 412 and changes nothing.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("a stale If-Match is refused with 412 and changes nothing") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;

  auto first = gateway.patch_desired("valve-1", {{"open", true}}, 0);
  REQUIRE(first.status == 200);
  CHECK(first.etag == "\"1\"");
  auto second = gateway.patch_desired("valve-1", {{"open", false}}, 1);
  REQUIRE(second.status == 200);
  CHECK(second.etag == "\"2\"");

  const auto before = gateway.get("/v1/twins/valve-1");
  auto stale = gateway.patch_desired("valve-1", {{"open", true}, {"rate", 3}}, 1);
  CHECK(stale.status == 412);
  CHECK(stale.content_type == "application/problem+json");
  CHECK(stale.body["type"] == "urn:doppel:problem:precondition_failed");
  CHECK(stale.body["status"] == 412);
  CHECK(stale.body["detail"].get<std::string>().find("current desired version is 2") !=
        std::string::npos);
  const auto after = gateway.get("/v1/twins/valve-1");
  CHECK(after.body == before.body);
  CHECK(after.etag == before.etag);

  // PUT with a stale version is refused the same way; "*" matches any version.
  auto put = gateway.request("PUT", "/v1/twins/valve-1/desired", R"({"open":true})",
                             {{"If-Match", "\"7\""}});
  CHECK(put.status == 412);
  auto any =
      gateway.request("PUT", "/v1/twins/valve-1/desired", R"({"open":true})", {{"If-Match", "*"}});
  CHECK(any.status == 200);
  CHECK(any.body["desired"] == json{{"open", true}});
  auto garbage = gateway.request("PATCH", "/v1/twins/valve-1/desired", R"({"open":1})",
                                 {{"If-Match", "\"abc\""}});
  CHECK(garbage.status == 400);
  // The desired document has its own ETag: the desired version.
  auto desired = gateway.get("/v1/twins/valve-1/desired");
  CHECK(desired.status == 200);
  CHECK(desired.etag == "\"3\"");
  CHECK(desired.body == json{{"open", true}});
}

TEST_CASE("a weak If-Match never matches: 412, nothing changes") {
  Stack stack;
  auto& gateway = stack.gateway;
  REQUIRE(gateway.patch_desired("valve-2", {{"open", true}}).status == 200);
  const auto before = gateway.get("/v1/twins/valve-2");
  auto weak =
      gateway.request("PATCH", "/v1/twins/valve-2/desired", R"({"open":false})",
                      {{"If-Match", "W/\"1\""}, {"Content-Type", "application/merge-patch+json"}});
  CHECK(weak.status == 412);
  CHECK(weak.body["type"] == "urn:doppel:problem:precondition_failed");
  CHECK(weak.body["detail"].get<std::string>().find("weak") != std::string::npos);
  CHECK(gateway.get("/v1/twins/valve-2").body == before.body);
}
