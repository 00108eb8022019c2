// A DeviceCodec for the runtime's tests, so that they need no adapter (doppel::mqtt): device
// messages as small JSON objects, and outputs as the JSON of their fields. It checks what the
// runtime relies on a codec for — a payload that is not a JSON object is kMalformed, a
// payload over the limits kTooLarge or kTooDeep, a field of the wrong type kInvalidArgument —
// and nothing of the real wire format's details (mqtt/codec.h, tested in tests/mqtt/).
#pragma once

#include <string>
#include <string_view>

#include "twins/document.h"
#include "twins/overloaded.h"
#include "twins/ports.h"
#include "twins/twin.h"

namespace doppel::testing {

class FakeCodec final : public twins::DeviceCodec {
 public:
  Result<twins::DeviceMessage> decode(twins::InboundKind kind, std::string_view payload,
                                      twins::Wire, const twins::Limits& limits) const override {
    auto parsed = twins::parse_json(payload.empty() ? std::string_view("{}") : payload,
                                    limits.max_payload_bytes(), limits.max_depth + 1);
    if (!parsed) return parsed.status();
    const twins::json& j = *parsed;
    if (!j.is_object()) return Status(StatusCode::kMalformed, "not a JSON object");
    std::string token;
    if (auto t = j.find("token"); t != j.end()) {
      if (!t->is_string()) return Status(StatusCode::kInvalidArgument, "'token' must be a string");
      token = t->get<std::string>();
    }
    switch (kind) {
      case twins::InboundKind::kReported: {
        auto state = j.find("state");
        if (state == j.end() || !state->is_object()) {
          return Status(StatusCode::kInvalidArgument, "'state' must be an object");
        }
        return twins::DeviceMessage(twins::ReportedMessage{*state, token, std::nullopt, {}, {}});
      }
      case twins::InboundKind::kGet:
        return twins::DeviceMessage(twins::GetMessage{token});
      case twins::InboundKind::kDelete:
        return twins::DeviceMessage(twins::DeleteMessage{token, std::nullopt});
      case twins::InboundKind::kJobsQuery:
        return twins::DeviceMessage(twins::JobsQueryMessage{token});
      case twins::InboundKind::kStatus: {
        twins::StatusMessage s;
        s.online = j.value("state", std::string("online")) == "online";
        if (auto i = j.find("interval_s"); i != j.end() && i->is_number()) {
          s.interval_s = i->get<double>();
        }
        return twins::DeviceMessage(s);
      }
      default: {
        twins::CommandResultMessage r;
        auto status = twins::parse_result_status(j.value("status", std::string("succeeded")));
        if (!status) return Status(StatusCode::kInvalidArgument, "unknown 'status'");
        r.status = *status;
        r.result = j.value("result", twins::json());
        r.error = j.value("error", std::string());
        return twins::DeviceMessage(r);
      }
    }
  }

  std::string encode(const twins::DeviceOutput& output, twins::Wire) const override {
    return std::visit(
        twins::Overloaded{
            [](const twins::DeltaOut& d) {
              return twins::json{{"version", d.version}, {"state", d.state}}.dump();
            },
            [](const twins::TwinOut& t) {
              twins::json j = t.document;
              if (!t.token.empty()) j["token"] = t.token;
              return j.dump();
            },
            [](const twins::CommandOut& c) {
              return twins::json{{"id", c.id}, {"name", c.name}, {"args", c.args}}.dump();
            },
            [](const twins::ErrorOut& e) {
              return twins::json{
                  {"topic", e.topic}, {"code", e.code}, {"message", e.message}, {"token", e.token}}
                  .dump();
            },
            [](const twins::ShadowReply& r) { return r.body.dump(); }},
        output);
  }
};

}  // namespace doppel::testing
