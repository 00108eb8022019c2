// Malformed device payloads, bad ids, oversized and too-deep documents, and bad HTTP bodies get
// precise errors (the device's errors topic, problem+json) and change nothing.
#include <doctest/doctest.h>

#include "mqtt/codec.h"
#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

std::string deep_state(int levels) {
  std::string s = R"({"state":)";
  for (int i = 0; i < levels; ++i) s += R"({"k":)";
  s += "1" + std::string(static_cast<size_t>(levels) + 1, '}');
  return s;
}

json error_of(const std::string& payload) { return json::parse(payload); }

}  // namespace

TEST_CASE("bad device messages get errors on the device's errors topic and change nothing") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;

  TestDevice dev("dev-1", broker.uri());
  dev.connect();
  dev.publish("reported", R"({"state":{"temp":20,"big":")" + std::string(9000, 'x') + R"("}})");
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/dev-1").status == 200; }, 10s));
  REQUIRE(gateway.patch_desired("dev-1", {{"mode", "eco"}}).status == 200);
  dev.wait_for("delta", 1);
  const json before = gateway.get("/v1/twins/dev-1").body;

  struct Case {
    std::string payload;
    std::string content_type;
    std::string code;
  };
  const std::vector<Case> cases = {
      {R"({"state":{"temp":)", "", "malformed"},
      {"not json at all", "", "malformed"},
      {R"({"state":[1,2]})", "", "invalid_argument"},
      {R"({"state":{"temp":21},"token":17})", "", "invalid_argument"},
      {R"({"state":{"temp":21},"surprise":true})", "", "invalid_argument"},
      {R"({"state":{"x":")" + std::string(30000, 'y') + R"("}})", "", "too_large"},
      {R"({"state":{"more":")" + std::string(9000, 'z') + R"("}})", "", "too_large"},  // merged
      {deep_state(11), "", "too_deep"},
      {R"({"state":{"n":1)" + std::string(400, '0') + "}}", "", "malformed"},
      {std::string("\x0a\xff\xff", 3), "application/x-protobuf", "malformed"},
  };
  size_t i = 0;
  for (const auto& c : cases) {
    CAPTURE(c.payload.substr(0, 60));
    dev.publish("reported", c.payload, c.content_type);
    auto errors = dev.wait_for("errors", ++i);
    REQUIRE(errors.size() == i);
    const auto enc = c.content_type.empty() ? doppel::twins::Encoding::kJson
                                            : doppel::twins::Encoding::kProtobuf;
    auto e = doppel::mqtt::WireCodec().decode_device(doppel::twins::OutboundKind::kError,
                                                     errors.back(), enc);
    REQUIRE(e);
    const auto& err = std::get<doppel::twins::ErrorOut>(*e);
    CHECK(err.code == c.code);
    CHECK(err.topic == "twins/dev-1/reported");
    CHECK(!err.message.empty());
  }
  dev.publish("status", R"({"state":"asleep"})");
  CHECK(error_of(dev.wait_for("errors", ++i).back())["code"] == "invalid_argument");
  dev.publish("commands/c1/result", R"({"status":"done"})");
  CHECK(error_of(dev.wait_for("errors", ++i).back())["code"] == "invalid_argument");

  // Nothing changed, nothing was created, the gateway is alive.
  const json after = gateway.get("/v1/twins/dev-1").body;
  CHECK(after["reported"] == before["reported"]);
  CHECK(after["version"] == before["version"]);
  CHECK(after["metadata"] == before["metadata"]);
  CHECK(gateway.list_all().size() == 1);
  CHECK(gateway.get("/healthz").status == 200);
  CHECK(gateway.running());

  // Still accepts good input.
  dev.publish("reported", R"({"state":{"mode":"eco"}})");
  CHECK(eventually([&] { return gateway.get("/v1/twins/dev-1").body["delta"].empty(); }, 10s));
}

TEST_CASE("a device topic with an invalid id gets an invalid_id error and creates nothing") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;
  // A device whose own id is invalid: its errors level is twins/-bad/errors.
  TestDevice bad("-bad", broker.uri());
  bad.connect();
  bad.publish("reported", R"({"state":{"a":1}})");
  auto errors = bad.wait_for("errors", 1);
  REQUIRE(errors.size() == 1);
  const json e = json::parse(errors[0]);
  CHECK(e["code"] == "invalid_id");
  CHECK(e["message"].get<std::string>().find("-bad") != std::string::npos);
  CHECK(gateway.list_all().empty());
}

TEST_CASE("bad HTTP requests get problem+json and change nothing") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;
  REQUIRE(gateway.patch_desired("t-1", {{"a", 1}}).status == 200);
  const json before = gateway.get("/v1/twins/t-1").body;

  struct Case {
    std::string method, path, body, content_type;
    int status;
    std::string type;
  };
  const std::string mp = "application/merge-patch+json";
  std::string deep = "";
  for (int i = 0; i < 11; ++i) deep += R"({"k":)";
  deep += "1" + std::string(11, '}');
  const std::vector<Case> cases = {
      {"PATCH", "/v1/twins/t-1/desired", R"({"a":)", mp, 400, "malformed"},
      {"PATCH", "/v1/twins/t-1/desired", "[1,2]", mp, 400, "invalid_argument"},
      {"PATCH", "/v1/twins/t-1/desired", "", mp, 400, "malformed"},
      {"PATCH", "/v1/twins/t-1/desired", deep, mp, 400, "too_deep"},
      {"PATCH", "/v1/twins/t-1/desired", R"({"a":")" + std::string(30000, 'x') + "\"}", mp, 413,
       "too_large"},
      {"PATCH", "/v1/twins/t-1/desired", R"({"a":")" + std::string(2 << 20, 'x') + "\"}", mp, 413,
       "too_large"},
      {"PATCH", "/v1/twins/t-1/desired", R"({"a":2})", "text/plain", 415, "unsupported_media_type"},
      {"PATCH", "/v1/twins/bad%20id/desired", R"({"a":2})", mp, 400, "invalid_id"},
      {"PUT", "/v1/twins/t-1", R"({"desird":{"a":2}})", "application/json", 400,
       "invalid_argument"},
      {"PUT", "/v1/twins/t-1", R"({"stale_after_s":-5})", "application/json", 400,
       "invalid_argument"},
      {"PUT", "/v1/twins/t-1", R"({"tags":"north"})", "application/json", 400, "invalid_argument"},
      {"GET", "/v1/twins/nobody", "", "", 404, "not_found"},
      {"GET", "/v1/nothing-here", "", "", 404, "not_found"},
      {"GET", "/v1/twins?limit=0", "", "", 400, "invalid_argument"},
      {"GET", "/v1/twins?cursor=%2Fx", "", "", 400, "invalid_argument"},
      // A NUL byte used to end the JSON text; a NUL inside a key was accepted.
      {"PATCH", "/v1/twins/t-1/desired", std::string("{\"a\":2}\0garbage", 15), mp, 400,
       "malformed"},
      {"PATCH", "/v1/twins/t-1/desired", R"({"a\u0000b":2})", mp, 400, "invalid_argument"},
      {"PUT", "/v1/twins/t-1", R"({"tags":{"x\u0000":1}})", "application/json", 400,
       "invalid_argument"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.method);
    CAPTURE(c.path);
    CAPTURE(c.body.substr(0, 40));
    auto r = gateway.request(c.method, c.path, c.body, {{"Content-Type", c.content_type}});
    CHECK(r.status == c.status);
    CHECK(r.content_type == "application/problem+json");
    CHECK(r.body["type"] == "urn:doppel:problem:" + c.type);
    CHECK(r.body["status"] == c.status);
    CHECK(r.body["detail"].is_string());
  }
  const json after = gateway.get("/v1/twins/t-1").body;
  CHECK(after == before);
  CHECK(gateway.list_all().size() == 1);
  CHECK(gateway.get("/healthz").status == 200);
}
