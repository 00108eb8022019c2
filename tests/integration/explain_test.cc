// GET /v1/twins/{id}/explain over the real daemon and broker: a device that receives a delta and
// reports the old value is `not_applied`; a message the gateway refused is `device_error`, kept
// with the twin across a kill -9 of doppeld; an unknown twin is 404 problem+json. (Each code on
// its own: tests/twins/explain_test.cc.)
#include <doctest/doctest.h>

#include <string>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

json reason_of(const json& explanation, const std::string& code) {
  for (const auto& r : explanation["reasons"]) {
    if (r["code"] == code) return r;
  }
  return json();
}

}  // namespace

TEST_CASE("explain: not_applied, then device_error kept across a restart; 404 for no twin") {
  Stack stack;
  auto& gateway = stack.gateway;
  TestDevice dev("fan-7", stack.broker.uri());
  dev.connect();
  dev.publish("status", R"({"state":"online","interval_s":60})");
  dev.publish("reported", R"({"state":{"fan":{"speed":1}}})");
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/fan-7").status == 200; }, 10s));
  REQUIRE(gateway.patch_desired("fan-7", {{"fan", {{"speed", 2}}}}).status == 200);
  dev.wait_for("delta", 1);
  dev.publish("reported", R"({"state":{"fan":{"speed":1}}})");  // received, not applied

  json e;
  REQUIRE(eventually(
      [&] {
        e = gateway.get("/v1/twins/fan-7/explain").body;
        return !reason_of(e, "not_applied").is_null();
      },
      10s));
  CHECK(e["converged"] == false);
  const json r = reason_of(e, "not_applied");
  CHECK(r["field"] == "fan.speed");
  CHECK(r["reported"] == 1);
  CHECK(r["desired"] == 2);
  CHECK(!reason_of(e, "retrying").is_null());

  dev.publish("reported", "{not json");
  REQUIRE(eventually(
      [&] {
        e = gateway.get("/v1/twins/fan-7/explain").body;
        return !reason_of(e, "device_error").is_null();
      },
      10s));
  CHECK(reason_of(e, "device_error")["error"] == "malformed");
  CHECK(reason_of(e, "device_error")["topic"] == "twins/fan-7/reported");

  gateway.kill9();
  gateway.start();
  e = gateway.get("/v1/twins/fan-7/explain").body;
  CHECK(reason_of(e, "device_error")["error"] == "malformed");  // stored with the twin

  auto missing = gateway.get("/v1/twins/nobody/explain");
  CHECK(missing.status == 404);
  CHECK(missing.content_type == "application/problem+json");
}
