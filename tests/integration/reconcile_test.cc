// A device that ignores deltas gets the retries and ends failed; well-behaved ones converge.
#include <doctest/doctest.h>

#include <signal.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("retries for a device that ignores deltas end in failed; the others converge") {
  Stack stack({"--reconcile-timeout-s", "0.2", "--reconcile-max-attempts", "3"});
  auto& gateway = stack.gateway;
  Process good = start_sim(
      stack.broker.uri(), stack.dir.file("good.log"),
      {"--devices", "5", "--interval-s", "1", "--delta-delay-s", "0.02", "--progress-s", "0"});
  TestDevice deaf("deaf-1", stack.broker.uri());
  deaf.connect();
  deaf.publish("status", R"({"state":"online","interval_s":60})");
  REQUIRE(eventually([&] { return gateway.list_all().size() == 6; }, 30s));

  for (auto& t : gateway.list_all()) {
    REQUIRE(gateway.patch_desired(t["id"], {{"mode", "eco"}}).status == 200);
  }
  json doc;
  REQUIRE(eventually(
      [&] {
        doc = gateway.get("/v1/twins/deaf-1").body;
        return doc["reconcile"]["state"] == "failed";
      },
      20s));
  CHECK(doc["reconcile"]["attempts"] == 3);
  CHECK(doc["reconcile"]["next_retry"].is_null());
  CHECK(doc["delta"] == json{{"mode", "eco"}});
  const auto deltas = deaf.wait_for("delta", 3);
  CHECK(deltas.size() == 3);  // one send and two retries, each the same delta
  for (const auto& d : deltas) CHECK(json::parse(d)["state"] == json{{"mode", "eco"}});
  CHECK(gateway.log().find("twin.reconcile_failed twin=deaf-1") != std::string::npos);

  CHECK(eventually(
      [&] {
        for (auto& t : gateway.list_all()) {
          if (t["id"] == "deaf-1") continue;
          if (t["reconcile"]["state"] != "converged" || !t["delta"].empty()) return false;
        }
        return true;
      },
      20s));

  // A new desired change starts a new cycle, even after failing; the device converging ends it.
  REQUIRE(gateway.patch_desired("deaf-1", {{"mode", "boost"}}).status == 200);
  CHECK(gateway.get("/v1/twins/deaf-1").body["reconcile"]["state"] == "pending");
  deaf.publish("reported", R"({"state":{"mode":"boost"}})");
  CHECK(eventually(
      [&] { return gateway.get("/v1/twins/deaf-1").body["reconcile"]["state"] == "converged"; },
      10s));
  good.signal(SIGINT);
  good.wait_exit(10s);
}
