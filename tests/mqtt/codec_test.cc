// JSON and Protobuf carry the same messages; bad payloads get precise errors (DESIGN §4).
#include <doctest/doctest.h>

#include <google/protobuf/struct.pb.h>

#include "mqtt/codec.h"
#include "mqtt/proto/doppel.pb.h"

using doppel::StatusCode;
using namespace doppel::twins;
using doppel::mqtt::WireCodec;

namespace {

const json kDocument = json::parse(R"({
  "fan": {"speed": 3, "ratio": 0.25, "modes": ["eco", "boost"]},
  "enabled": true, "label": "pump \"7\" ünïcode", "nothing": null, "big": 9007199254740992,
  "negative": -12, "nested": {"a": {"b": {"c": [1, {"d": false}]}}}
})");

}  // namespace

TEST_CASE("both codecs round-trip the same document in every device message") {
  const WireCodec codec;
  const Limits limits;
  for (Encoding enc : {Encoding::kJson, Encoding::kProtobuf}) {
    CAPTURE(to_string(enc));
    auto r = codec.decode(
        InboundKind::kReported,
        codec.encode_device(ReportedMessage{kDocument, "tok-1", 1234, {}, {}}, enc), enc, limits);
    REQUIRE(r);
    const auto& rep = std::get<ReportedMessage>(*r);
    CHECK(rep.state == kDocument);
    CHECK(rep.token == "tok-1");
    CHECK(rep.device_ts == 1234);

    auto g =
        codec.decode(InboundKind::kGet, codec.encode_device(GetMessage{"g"}, enc), enc, limits);
    REQUIRE(g);
    CHECK(std::get<GetMessage>(*g).token == "g");

    auto s = codec.decode(InboundKind::kStatus,
                          codec.encode_device(StatusMessage{true, 2.5, Encoding::kProtobuf}, enc),
                          enc, limits);
    REQUIRE(s);
    CHECK(std::get<StatusMessage>(*s).online);
    CHECK(std::get<StatusMessage>(*s).interval_s == 2.5);
    CHECK(std::get<StatusMessage>(*s).encoding == Encoding::kProtobuf);

    auto c = codec.decode(
        InboundKind::kCommandResult,
        codec.encode_device(CommandResultMessage{ResultStatus::kFailed, kDocument, "boom"}, enc),
        enc, limits);
    REQUIRE(c);
    CHECK(std::get<CommandResultMessage>(*c).status == ResultStatus::kFailed);
    CHECK(std::get<CommandResultMessage>(*c).result == kDocument);
    CHECK(std::get<CommandResultMessage>(*c).error == "boom");
  }
}

TEST_CASE("both codecs round-trip every gateway message") {
  const WireCodec codec;
  for (Encoding enc : {Encoding::kJson, Encoding::kProtobuf}) {
    CAPTURE(to_string(enc));
    auto d = codec.decode_device(OutboundKind::kDelta,
                                 codec.encode(DeltaOut{7, kDocument, 0, {}, 0}, enc), enc);
    REQUIRE(d);
    CHECK(std::get<DeltaOut>(*d).version == 7);
    CHECK(std::get<DeltaOut>(*d).state == kDocument);

    const json doc = {{"id", "x"},
                      {"version", 3},
                      {"desired", kDocument},
                      {"reported", json::object()},
                      {"delta", kDocument},
                      {"desired_version", 2},
                      {"reported_version", 1}};
    auto t = codec.decode_device(OutboundKind::kTwin, codec.encode(TwinOut{doc, "tk"}, enc), enc);
    REQUIRE(t);
    CHECK(std::get<TwinOut>(*t).document == doc);
    CHECK(std::get<TwinOut>(*t).token == "tk");

    auto c = codec.decode_device(OutboundKind::kCommand,
                                 codec.encode(CommandOut{"c1", "reboot", kDocument, 99}, enc), enc);
    REQUIRE(c);
    CHECK(std::get<CommandOut>(*c).id == "c1");
    CHECK(std::get<CommandOut>(*c).args == kDocument);
    CHECK(std::get<CommandOut>(*c).expires_at == 99);

    auto e = codec.decode_device(
        OutboundKind::kError, codec.encode(ErrorOut{"t/x", "malformed", "bad", "tk", 0}, enc), enc);
    REQUIRE(e);
    CHECK(std::get<ErrorOut>(*e).code == "malformed");
    CHECK(std::get<ErrorOut>(*e).topic == "t/x");
  }
}

TEST_CASE("malformed JSON and wrong types get precise errors") {
  const WireCodec codec;
  const Limits l;
  auto check = [&](InboundKind k, const char* payload, StatusCode code, const char* words) {
    auto r = codec.decode(k, payload, Encoding::kJson, l);
    REQUIRE_MESSAGE(!r, payload);
    CHECK_MESSAGE(r.status().code() == code, payload, " -> ", r.status().to_string());
    CHECK_MESSAGE(r.status().message().find(words) != std::string::npos, r.status().message());
  };
  check(InboundKind::kReported, "{\"state\": {", StatusCode::kMalformed, "malformed JSON");
  check(InboundKind::kReported, "", StatusCode::kMalformed, "empty payload");
  check(InboundKind::kReported, "[1]", StatusCode::kMalformed, "JSON object");
  check(InboundKind::kReported, "{}", StatusCode::kInvalidArgument, "'state' is required");
  check(InboundKind::kReported, R"({"state": 5})", StatusCode::kInvalidArgument, "JSON object");
  check(InboundKind::kReported, R"({"state": {}, "token": 5})", StatusCode::kInvalidArgument,
        "'token' must be a string");
  check(InboundKind::kReported, R"({"state": {}, "ts": "now"})", StatusCode::kInvalidArgument,
        "'ts'");
  check(InboundKind::kReported, R"({"state": {}, "extra": 1})", StatusCode::kInvalidArgument,
        "unknown field 'extra'");
  check(InboundKind::kStatus, R"({"state": "sleeping"})", StatusCode::kInvalidArgument,
        "\"online\" or \"offline\"");
  check(InboundKind::kStatus, R"({"state": "online", "interval_s": -1})",
        StatusCode::kInvalidArgument, "interval_s");
  check(InboundKind::kStatus, R"({"state": "online", "encoding": "xml"})",
        StatusCode::kInvalidArgument, "encoding");
  check(InboundKind::kCommandResult, R"({"status": "done"})", StatusCode::kInvalidArgument,
        "'status'");
  check(InboundKind::kCommandResult, R"({"status": "failed", "result": [1]})",
        StatusCode::kInvalidArgument, "result");
  // An empty get is a plain request.
  CHECK(codec.decode(InboundKind::kGet, "", Encoding::kJson, l));
}

TEST_CASE("oversized and too-deep JSON is rejected before it is built") {
  const WireCodec codec;
  Limits l;
  std::string big = R"({"state":{"a":")" + std::string(l.max_payload_bytes(), 'x') + "\"}}";
  CHECK(codec.decode(InboundKind::kReported, big, Encoding::kJson, l).status().code() ==
        StatusCode::kTooLarge);
  std::string deep = R"({"state":)";
  for (int i = 0; i < 11; ++i) deep += R"({"k":)";
  deep += "1" + std::string(12, '}');
  auto r = codec.decode(InboundKind::kReported, deep, Encoding::kJson, l);
  CHECK(r.status().code() == StatusCode::kTooDeep);
  CHECK(r.status().message().find("at most 10 levels") != std::string::npos);
}

TEST_CASE("malformed Protobuf is rejected, not misread") {
  const WireCodec codec;
  const Limits l;
  for (const std::string& garbage : {std::string("\xff\xff\xff\xff", 4),
                                     std::string("\x0a\x50{", 3), std::string("{\"state\":{}}")}) {
    auto r = codec.decode(InboundKind::kReported, garbage, Encoding::kProtobuf, l);
    REQUIRE(!r);
    CHECK(r.status().code() == StatusCode::kMalformed);
  }
  // A valid Status message with an invalid state value.
  doppel::wire::Status st;
  st.set_state("maybe");
  CHECK(codec.decode(InboundKind::kStatus, st.SerializeAsString(), Encoding::kProtobuf, l)
            .status()
            .code() == StatusCode::kInvalidArgument);
  // A reported message without state.
  CHECK(codec.decode(InboundKind::kReported, "", Encoding::kProtobuf, l).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("Protobuf Structs obey the depth limit and JSON's number rules") {
  const WireCodec codec;
  const Limits l;
  doppel::wire::Reported deep;
  google::protobuf::Struct* s = deep.mutable_state();
  for (int i = 0; i < 11; ++i) s = (*s->mutable_fields())["k"].mutable_struct_value();
  auto r = codec.decode(InboundKind::kReported, deep.SerializeAsString(), Encoding::kProtobuf, l);
  CHECK(r.status().code() == StatusCode::kTooDeep);

  // Far too deep for even the parser: rejected without unbounded recursion.
  doppel::wire::Reported abyss;
  s = abyss.mutable_state();
  for (int i = 0; i < 300; ++i) s = (*s->mutable_fields())["k"].mutable_struct_value();
  auto r2 = codec.decode(InboundKind::kReported, abyss.SerializeAsString(), Encoding::kProtobuf, l);
  CHECK(!r2);

  doppel::wire::Reported nan;
  (*nan.mutable_state()->mutable_fields())["x"].set_number_value(std::nan(""));
  auto r3 = codec.decode(InboundKind::kReported, nan.SerializeAsString(), Encoding::kProtobuf, l);
  CHECK(r3.status().code() == StatusCode::kInvalidArgument);
}
