// The topic scheme of DESIGN §4: parsing rejects malformed topics and ids.
#include <doctest/doctest.h>

#include "mqtt/topics.h"

using doppel::StatusCode;
using namespace doppel::mqtt;
using doppel::twins::InboundKind;
using doppel::twins::Limits;
using doppel::twins::OutboundKind;

TEST_CASE("device topics parse into kind, device id and command id") {
  Limits l;
  auto t = parse_inbound_topic("twins/pump-0042/reported", "twins", l);
  REQUIRE(t);
  CHECK(t->kind == InboundKind::kReported);
  CHECK(t->device_id == "pump-0042");
  CHECK(parse_inbound_topic("twins/a/get", "twins", l)->kind == InboundKind::kGet);
  CHECK(parse_inbound_topic("twins/a/status", "twins", l)->kind == InboundKind::kStatus);
  auto r = parse_inbound_topic("twins/a.b:c/commands/0123abcd/result", "twins", l);
  REQUIRE(r);
  CHECK(r->kind == InboundKind::kCommandResult);
  CHECK(r->device_id == "a.b:c");
  CHECK(r->command_id == "0123abcd");
  CHECK(parse_inbound_topic("fleet/x/devices/a/reported", "fleet/x/devices", l));
}

TEST_CASE("malformed topics are rejected") {
  Limits l;
  for (const char* bad :
       {"twins", "twins/", "twins/a", "twins/a/", "twins/a/reportedx", "twins/a/delta",
        "twins/a/reported/extra", "other/a/reported", "twinsx/a/reported", "twins//reported",
        "twins/a/commands/c1", "twins/a/commands/c1/results", "twins/a/commands//result",
        "/twins/a/reported"}) {
    auto t = parse_inbound_topic(bad, "twins", l);
    CHECK_MESSAGE(!t, bad);
  }
  CHECK(parse_inbound_topic("twins/a/delta", "twins", l).status().code() == StatusCode::kMalformed);
}

TEST_CASE("invalid device and command ids are rejected as invalid_id") {
  Limits l;
  for (const char* bad :
       {"twins/-a/reported", "twins/a b/reported", "twins/a%/get", "twins/é/status"}) {
    CHECK_MESSAGE(parse_inbound_topic(bad, "twins", l).status().code() == StatusCode::kInvalidId,
                  bad);
  }
  const std::string long_id = "twins/" + std::string(129, 'x') + "/reported";
  CHECK(parse_inbound_topic(long_id, "twins", l).status().code() == StatusCode::kInvalidId);
  CHECK(parse_inbound_topic("twins/a/commands/c 1/result", "twins", l).status().code() ==
        StatusCode::kInvalidId);
}

TEST_CASE("outbound topics follow the scheme") {
  CHECK(outbound_topic("twins", "a", OutboundKind::kDelta) == "twins/a/delta");
  CHECK(outbound_topic("twins", "a", OutboundKind::kTwin) == "twins/a/twin");
  CHECK(outbound_topic("twins", "a", OutboundKind::kError) == "twins/a/errors");
  CHECK(outbound_topic("twins", "a", OutboundKind::kCommand, "c1") == "twins/a/commands/c1");
  CHECK(device_topic("twins", "a", InboundKind::kCommandResult, "c1") ==
        "twins/a/commands/c1/result");
  CHECK(gateway_subscriptions("twins").size() == 4);
}

TEST_CASE("an invalid id still gets an error reply when it is a usable topic level") {
  CHECK(raw_device_segment("twins/bad id/reported", "twins") == "bad id");
  CHECK(raw_device_segment("twins//reported", "twins").empty());
  CHECK(raw_device_segment("other/x/reported", "twins").empty());
}
