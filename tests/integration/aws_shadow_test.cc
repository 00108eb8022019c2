// The AWS IoT Device Shadow dialect against the real broker and doppeld: a device that speaks
// only $aws/things/{thing}/shadow/... (Paho here, over plain MQTT; the real AWS SDK over mutual
// TLS is tests/aws/) reports, gets, receives an operator's desired change as a delta carrying the
// document version, converges, is refused a stale version with 409, clears desired itself,
// deletes its shadow; named shadows and bad requests are refused on …/rejected; the twin shows
// and queries the dialect; a Doppel-dialect device beside it is unaffected.
#include <doctest/doctest.h>

#include <signal.h>

#include "simulator/url.h"
#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

const std::string kThing = "aws-dev-1";
const std::string kShadow = "$aws/things/" + kThing + "/shadow/";

json parse(const std::string& s) { return json::parse(s); }

// Publishes a shadow request and waits for the n-th answer on `answer` (accepted or rejected).
json request(TestDevice& dev, const std::string& op, const json& body, const std::string& answer,
             size_t n) {
  dev.publish_topic(kShadow + op, body.dump());
  auto got = dev.wait_on(kShadow + answer, n);
  REQUIRE_MESSAGE(got.size() >= n, "no answer on ", answer, " to ", body.dump());
  return parse(got[n - 1]);
}

}  // namespace

TEST_CASE("an AWS-dialect device reports, converges, is refused stale versions and deletes") {
  Stack stack({"--aws-documents"});
  auto& gw = stack.gateway;
  TestDevice dev(kThing, stack.broker.uri());
  dev.connect();
  dev.subscribe("$aws/things/" + kThing + "/#");

  // A first update creates the twin; accepted echoes the section with second timestamps.
  const auto before_s = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  json acc =
      request(dev, "update",
              {{"state", {{"reported", {{"temp", 21}, {"mode", "eco"}}}}}, {"clientToken", "t-1"}},
              "update/accepted", 1);
  CHECK(acc["clientToken"] == "t-1");
  CHECK(acc["state"]["reported"]["temp"] == 21);
  CHECK(acc["metadata"]["reported"]["temp"]["timestamp"].get<int64_t>() >= before_s);
  CHECK(acc["timestamp"].get<int64_t>() < before_s + 60);  // seconds, not milliseconds
  const uint64_t v1 = acc["version"].get<uint64_t>();
  CHECK(v1 >= 1);
  // The answers came on doppeld's second connection (QoS 0, in batches).
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_batch_connected") == 1);
  auto docs = dev.wait_on(kShadow + "update/documents", 1);
  REQUIRE(docs.size() == 1);
  CHECK(parse(docs[0])["current"]["state"]["reported"]["mode"] == "eco");
  CHECK(parse(docs[0])["current"]["version"] == v1);
  CHECK(parse(docs[0])["previous"]["state"]["reported"].empty());

  auto twin = gw.get("/v1/twins/" + kThing);
  REQUIRE(twin.status == 200);
  CHECK(twin.body["device"]["dialect"] == "aws");
  CHECK(twin.body["connection"]["state"] == "online");
  CHECK(twin.body["version"] == v1);

  // The operator's desired change reaches it as update/delta, with the document version.
  auto patched = gw.patch_desired(kThing, {{"mode", "boost"}});
  REQUIRE(patched.status == 200);
  auto deltas = dev.wait_on(kShadow + "update/delta", 1);
  REQUIRE(deltas.size() == 1);
  json delta = parse(deltas[0]);
  CHECK(delta["state"] == json{{"mode", "boost"}});
  CHECK(delta["version"] == patched.body["version"]);
  CHECK(delta["metadata"]["mode"]["timestamp"].get<int64_t>() >= before_s);
  const uint64_t v2 = delta["version"].get<uint64_t>();

  // A request naming an old version is refused with 409 and changes nothing.
  json rej = request(
      dev, "update",
      {{"state", {{"reported", {{"mode", "boost"}}}}}, {"clientToken", "stale"}, {"version", v1}},
      "update/rejected", 1);
  CHECK(rej["code"] == 409);
  CHECK(rej["clientToken"] == "stale");
  CHECK(gw.get("/v1/twins/" + kThing).body["reported"]["mode"] == "eco");

  // With the current version it is applied; the twin converges.
  acc = request(
      dev, "update",
      {{"state", {{"reported", {{"mode", "boost"}}}}}, {"clientToken", "t-2"}, {"version", v2}},
      "update/accepted", 2);
  CHECK(acc["version"] == v2 + 1);
  REQUIRE(eventually(
      [&] {
        auto t = gw.get("/v1/twins/" + kThing).body;
        return t["reconcile"]["state"] == "converged" && t["delta"].empty();
      },
      10s));

  // get: state with desired, reported (no delta once converged), metadata, version.
  json got = request(dev, "get", {{"clientToken", "g-1"}}, "get/accepted", 1);
  CHECK(got["state"]["desired"]["mode"] == "boost");
  CHECK(got["state"]["reported"]["temp"] == 21);
  CHECK_FALSE(got["state"].contains("delta"));
  CHECK(got["version"] == v2 + 1);
  CHECK(got["clientToken"] == "g-1");
  CHECK(got["metadata"]["desired"]["mode"]["timestamp"].get<int64_t>() >= before_s);

  // The device clears desired itself (null deletes), as AWS allows.
  acc =
      request(dev, "update", {{"state", {{"desired", {{"mode", nullptr}}}}}}, "update/accepted", 3);
  CHECK(acc["state"]["desired"]["mode"].is_null());
  CHECK_FALSE(gw.get("/v1/twins/" + kThing).body["desired"].contains("mode"));

  // The dialect is queryable.
  auto q = gw.get("/v1/twins?q=" + doppel::sim::percent_encode("device.dialect = 'aws'"));
  REQUIRE(q.status == 200);
  REQUIRE(q.body["items"].size() == 1);
  CHECK(q.body["items"][0]["id"] == kThing);

  // Bad requests: 400 on the operation's rejected topic, nothing changed.
  const uint64_t before_bad = gw.get("/v1/twins/" + kThing).body["version"].get<uint64_t>();
  dev.publish_topic(kShadow + "update", "{not json");
  auto bad = dev.wait_on(kShadow + "update/rejected", 2);
  REQUIRE(bad.size() == 2);
  CHECK(parse(bad[1])["code"] == 400);
  rej = request(dev, "update", {{"clientToken", "no-state"}}, "update/rejected", 3);
  CHECK(rej["code"] == 400);
  CHECK(rej["message"].get<std::string>().find("state") != std::string::npos);
  rej = request(dev, "update",
                {{"state", {{"reported", {{"a", 1}}}}}, {"clientToken", std::string(65, 'x')}},
                "update/rejected", 4);
  CHECK(rej["code"] == 400);
  CHECK(gw.get("/v1/twins/" + kThing).body["version"] == before_bad);

  // Named shadows are not offered: 404 on their rejected topic.
  dev.publish_topic("$aws/things/" + kThing + "/shadow/name/cfg/get",
                    json{{"clientToken", "n-1"}}.dump());
  auto named = dev.wait_on("$aws/things/" + kThing + "/shadow/name/cfg/get/rejected", 1);
  REQUIRE(named.size() == 1);
  CHECK(parse(named[0])["code"] == 404);
  CHECK(parse(named[0])["clientToken"] == "n-1");

  // delete clears the state; the version is not reset; tags stay; a get then finds no shadow.
  REQUIRE(gw.request("PATCH", "/v1/twins/" + kThing, R"({"tags":{"site":"a"}})",
                     {{"Content-Type", "application/merge-patch+json"}})
              .status == 200);
  const uint64_t before_delete = gw.get("/v1/twins/" + kThing).body["version"].get<uint64_t>();
  json del = request(dev, "delete", {{"clientToken", "d-1"}}, "delete/accepted", 1);
  CHECK(del["clientToken"] == "d-1");
  CHECK(del["version"].get<uint64_t>() > before_delete);
  twin = gw.get("/v1/twins/" + kThing);
  CHECK(twin.body["reported"].empty());
  CHECK(twin.body["desired"].empty());
  CHECK(twin.body["tags"]["site"] == "a");
  rej = request(dev, "get", {{"clientToken", "g-2"}}, "get/rejected", 1);
  CHECK(rej["code"] == 404);

  // Nothing was sent on Doppel's own topics for this device.
  CHECK(dev.received("delta").empty());
  CHECK(dev.received("twin").empty());
  CHECK(gw.stop() == 0);
}

TEST_CASE("one fleet, two dialects: each device is answered in its own") {
  Stack stack;
  auto& gw = stack.gateway;
  TestDevice aws(kThing, stack.broker.uri());
  aws.connect();
  aws.subscribe("$aws/things/" + kThing + "/#");
  TestDevice own("own-dev-1", stack.broker.uri());
  own.connect();
  own.publish("status", R"({"state":"online"})");
  request(aws, "update", {{"state", {{"reported", {{"x", 1}}}}}}, "update/accepted", 1);
  // Without --aws-documents, no update/documents.
  CHECK(aws.received_on(kShadow + "update/documents").empty());
  REQUIRE(eventually([&] { return gw.get("/v1/twins/own-dev-1").status == 200; }, 10s));
  REQUIRE(gw.patch_desired(kThing, {{"x", 2}}).status == 200);
  REQUIRE(gw.patch_desired("own-dev-1", {{"x", 2}}).status == 200);
  CHECK(aws.wait_on(kShadow + "update/delta", 1).size() == 1);
  CHECK(own.wait_for("delta", 1).size() == 1);
  CHECK(gw.get("/v1/twins/own-dev-1").body["device"]["dialect"] == "doppel");
  CHECK(own.received_on("$aws/things/own-dev-1/shadow/update/delta").empty());
  CHECK(gw.stop() == 0);
}

TEST_CASE("a job rolls a desired change out to a mixed fleet: doppel-sim in both dialects") {
  Stack stack;
  auto& gw = stack.gateway;
  // Twenty devices in AWS IoT's dialect (sim-000000..019), twenty in Doppel's (sim-000020..039).
  Process aws = start_sim(stack.broker.uri(), stack.dir.file("sim-aws.log"),
                          {"--devices", "20", "--interval-s", "2", "--delta-delay-s", "0.05",
                           "--progress-s", "0", "--dialect", "aws"});
  Process own = start_sim(stack.broker.uri(), stack.dir.file("sim-own.log"),
                          {"--devices", "20", "--first-index", "20", "--interval-s", "2",
                           "--delta-delay-s", "0.05", "--progress-s", "0"});
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        auto twins = gw.list_all();
                        if (twins.size() != 40) return false;
                        for (auto& t : twins) {
                          const bool mine = std::stoi(t["id"].get<std::string>().substr(4)) < 20;
                          if (t["device"]["dialect"] != (mine ? "aws" : "doppel")) return false;
                          if (!t["reported"].contains("battery")) return false;
                        }
                        return true;
                      },
                      30s),
                  "the fleet did not report in its two dialects; sim logs:\n", aws.log(),
                  own.log());
  auto q =
      gw.get("/v1/twins?q=" + doppel::sim::percent_encode("device.dialect = 'aws'") + "&limit=100");
  REQUIRE(q.status == 200);
  CHECK(q.body["items"].size() == 20);

  const json body = {{"id", "setpoint-1"},
                     {"target", {{"query", "id LIKE 'sim-%'"}}},
                     {"action", {{"desired", {{"setpoint", 21}}}}}};
  auto created = gw.request("POST", "/v1/jobs", body.dump());
  REQUIRE_MESSAGE(created.status == 201, created.body.dump());
  CHECK(created.body["total"] == 40);
  json job;
  CHECK_MESSAGE(eventually(
                    [&] {
                      job = gw.get("/v1/jobs/setpoint-1").body;
                      return job["status"] == "completed";
                    },
                    60s, 200ms),
                "the job did not complete: ", job.dump());
  CHECK(job["counts"]["succeeded"] == 40);
  for (auto& t : gw.list_all()) {
    CHECK(t["reported"]["setpoint"] == 21);
    CHECK(t["reconcile"]["state"] == "converged");
  }

  // A command job: the AWS-dialect devices take it as an AWS IoT Jobs execution (notify-next,
  // then jobs/{jobId}/update SUCCEEDED), Doppel's own on their commands topic.
  const json reboot = {{"id", "reboot-1"},
                       {"target", {{"query", "id LIKE 'sim-%'"}}},
                       {"action", {{"command", {{"name", "reboot"}, {"args", {{"delay", 1}}}}}}}};
  created = gw.request("POST", "/v1/jobs", reboot.dump());
  REQUIRE_MESSAGE(created.status == 201, created.body.dump());
  CHECK_MESSAGE(eventually(
                    [&] {
                      job = gw.get("/v1/jobs/reboot-1").body;
                      return job["status"] == "completed";
                    },
                    60s, 200ms),
                "the command job did not complete: ", job.dump());
  CHECK(job["counts"]["succeeded"] == 40);
  auto done = gw.get("/v1/twins/sim-000003/commands?status=succeeded");
  REQUIRE(done.status == 200);
  REQUIRE(done.body["items"].size() == 1);
  CHECK(done.body["items"][0]["name"] == "reboot");
  CHECK(done.body["items"][0]["result"]["operation"] == "reboot");
  aws.signal(SIGINT);
  own.signal(SIGINT);
  CHECK(aws.wait_exit(15s));
  CHECK(own.wait_exit(15s));
  CHECK(gw.stop() == 0);
}
