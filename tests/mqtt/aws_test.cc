// The AWS dialect at the edge: its topics (aws_topics.h) and payloads (aws_codec.h) — which
// requests parse, which are refused and with which of AWS's codes, and the answers' shapes.
#include <doctest/doctest.h>

#include "mqtt/aws_codec.h"
#include "mqtt/aws_topics.h"
#include "mqtt/codec.h"

using doppel::StatusCode;
using namespace doppel::mqtt;
using namespace doppel::twins;

TEST_CASE("shadow request topics parse; named shadows are 404, others malformed") {
  Limits l;
  auto t = parse_aws_topic("$aws/things/pump-7/shadow/update", l);
  REQUIRE(t);
  CHECK(t->kind == InboundKind::kReported);
  CHECK(t->device_id == "pump-7");
  CHECK(parse_aws_topic("$aws/things/p/shadow/get", l)->kind == InboundKind::kGet);
  CHECK(parse_aws_topic("$aws/things/p/shadow/delete", l)->kind == InboundKind::kDelete);
  CHECK(parse_aws_topic("$aws/things/p/shadow/name/cfg/update", l).status().code() ==
        StatusCode::kNotFound);
  for (const char* bad : {"$aws/things/p", "$aws/things/p/shadow", "$aws/things/p/shadow/update/x",
                          "$aws/things//shadow/get", "$aws/things/p/shadow/updatex"}) {
    CHECK_MESSAGE(!parse_aws_topic(bad, l), bad);
  }
  CHECK(parse_aws_topic("$aws/things/bad id/shadow/get", l).status().code() ==
        StatusCode::kInvalidId);
  CHECK(aws_rejected_topic("$aws/things/p/shadow/name/n/get") ==
        "$aws/things/p/shadow/name/n/get/rejected");
  CHECK(aws_rejected_topic("$aws/things/p/+/get").empty());
  CHECK(aws_rejected_topic("twins/p/get").empty());
}

TEST_CASE("answers go to AWS's topics") {
  CHECK(aws_outbound_topic("p", OutboundKind::kDelta, ShadowOp::kUpdate) ==
        "$aws/things/p/shadow/update/delta");
  CHECK(aws_outbound_topic("p", OutboundKind::kReply, ShadowOp::kGet) ==
        "$aws/things/p/shadow/get/accepted");
  CHECK(aws_outbound_topic("p", OutboundKind::kReply, ShadowOp::kDocuments) ==
        "$aws/things/p/shadow/update/documents");
  CHECK(aws_outbound_topic("p", OutboundKind::kError, ShadowOp::kDelete) ==
        "$aws/things/p/shadow/delete/rejected");
  CHECK(aws_device_topic("p", ShadowOp::kGet) == "$aws/things/p/shadow/get");
}

TEST_CASE("an update decodes its sections, token and version; bad ones are refused") {
  Limits l;
  auto m = decode_aws(InboundKind::kReported,
                      R"({"state":{"reported":{"a":1},"desired":{"b":null}},"clientToken":"c",)"
                      R"("version":4})",
                      l);
  REQUIRE(m);
  const auto& r = std::get<ReportedMessage>(*m);
  CHECK(r.state == json{{"a", 1}});
  REQUIRE(r.desired);
  CHECK((*r.desired)["b"].is_null());
  CHECK(r.token == "c");
  CHECK(r.expected_version == 4u);
  // What AWS refuses with 400.
  for (const char* bad :
       {R"({"clientToken":"c"})", R"({"state":[]})", R"({"state":{}})", R"({"state":{"delta":{}}})",
        R"({"state":{"reported":1}})", R"({"state":{"reported":{}},"version":-1})",
        R"({"state":{"reported":{}},"extra":1})", "{not json"}) {
    auto d = decode_aws(InboundKind::kReported, bad, l);
    REQUIRE_MESSAGE(!d, bad);
    CHECK_MESSAGE(aws_error_code(code_name(d.status().code())) == 400, bad);
  }
  const std::string long_token =
      R"({"state":{"reported":{}},"clientToken":")" + std::string(65, 'x') + "\"}";
  CHECK(!decode_aws(InboundKind::kReported, long_token, l));
  // An empty payload is a get or delete without a token.
  CHECK(decode_aws(InboundKind::kGet, "", l));
  auto del = decode_aws(InboundKind::kDelete, R"({"version":3})", l);
  REQUIRE(del);
  CHECK(std::get<DeleteMessage>(*del).expected_version == 3u);
}

TEST_CASE("AWS codes: 404, 409, 413, 429, 500; errors in seconds with the token") {
  CHECK(aws_error_code("not_found") == 404);
  CHECK(aws_error_code("conflict") == 409);
  CHECK(aws_error_code("too_large") == 413);
  CHECK(aws_error_code("queue_full") == 429);
  CHECK(aws_error_code("internal") == 500);
  const json e = json::parse(
      encode_aws(ErrorOut{"t", "conflict", "Version conflict", "tk", 1'700'000'000'999}));
  CHECK(e == json{{"code", 409},
                  {"message", "Version conflict"},
                  {"timestamp", 1'700'000'000},
                  {"clientToken", "tk"}});
  DeltaOut d{3, {{"a", 1}}, 9, {{"a", {{"timestamp", 5}}}}, 7000};
  const json delta = json::parse(encode_aws(d));
  CHECK(delta["version"] == 9);
  CHECK(delta["timestamp"] == 7);
  CHECK(delta["state"] == json{{"a", 1}});
}

TEST_CASE("WireCodec dispatches on the dialect; AWS is JSON whatever the encoding") {
  WireCodec codec;
  Limits l;
  auto m = codec.decode(InboundKind::kReported, R"({"state":{"reported":{"a":1}}})",
                        Wire(Encoding::kProtobuf, Dialect::kAws), l);
  REQUIRE(m);
  CHECK(std::get<ReportedMessage>(*m).state == json{{"a", 1}});
  CHECK(!codec.decode(InboundKind::kDelete, "{}", Wire(Encoding::kJson), l));
  const std::string sent =
      encode_aws_device(ReportedMessage{{{"a", 1}}, "tok", {}, std::nullopt, 2});
  auto back = codec.decode(InboundKind::kReported, sent, Wire(Encoding::kJson, Dialect::kAws), l);
  REQUIRE(back);
  CHECK(std::get<ReportedMessage>(*back).expected_version == 2u);
}
