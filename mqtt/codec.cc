#include "mqtt/codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/logging.h>

#include "mqtt/aws_codec.h"
#include "mqtt/detail/json_fields.h"
#include "mqtt/detail/struct_json.h"
#include "mqtt/proto/doppel.pb.h"
#include "twins/overloaded.h"

namespace doppel::mqtt {
namespace {

using twins::CommandOut;
using twins::CommandResultMessage;
using twins::DeltaOut;
using twins::DeviceMessage;
using twins::DeviceOutput;
using twins::Encoding;
using twins::ErrorOut;
using twins::GetMessage;
using twins::InboundKind;
using twins::json;
using twins::Limits;
using twins::OutboundKind;
using twins::ReportedMessage;
using twins::StatusMessage;
using twins::TwinOut;

constexpr size_t kMaxTokenBytes = 256;
constexpr size_t kMaxErrorBytes = 1024;

using detail::invalid;
using detail::malformed;
using detail::only_fields;
using detail::optional_string;
using detail::parse_envelope;

// ---- JSON -------------------------------------------------------------------------------------

Result<DeviceMessage> decode_json(InboundKind kind, std::string_view payload,
                                  const Limits& limits) {
  auto env = parse_envelope(payload, limits, kind == InboundKind::kGet);
  if (!env) return env.status();
  json& obj = *env;
  switch (kind) {
    case InboundKind::kReported: {
      if (Status s = only_fields(obj, {"state", "token", "ts"}, "a reported message"); !s) return s;
      ReportedMessage m;
      auto state = obj.find("state");
      if (state == obj.end()) return invalid("'state' is required: the reported merge patch");
      if (!state->is_object()) {
        return invalid(std::string("'state' must be a JSON object, not ") + state->type_name());
      }
      if (Status s = optional_string(obj, "token", kMaxTokenBytes, m.token); !s) return s;
      if (auto ts = obj.find("ts"); ts != obj.end() && !ts->is_null()) {
        if (!ts->is_number_integer() || ts->get<int64_t>() < 0) {
          return invalid("'ts' must be a non-negative integer (Unix epoch milliseconds)");
        }
        m.device_ts = ts->get<int64_t>();
      }
      m.state = std::move(*state);
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kGet: {
      if (Status s = only_fields(obj, {"token"}, "a get message"); !s) return s;
      GetMessage m;
      if (Status s = optional_string(obj, "token", kMaxTokenBytes, m.token); !s) return s;
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kStatus: {
      if (Status s = only_fields(obj, {"state", "interval_s", "encoding"}, "a status message"); !s)
        return s;
      StatusMessage m;
      std::string state;
      if (Status s = optional_string(obj, "state", 16, state); !s) return s;
      if (state != "online" && state != "offline") {
        return invalid("'state' must be \"online\" or \"offline\"");
      }
      m.online = state == "online";
      if (auto it = obj.find("interval_s"); it != obj.end() && !it->is_null()) {
        if (!it->is_number() || !(it->get<double>() > 0) || it->get<double>() > 86400 * 365) {
          return invalid("'interval_s' must be a positive number of seconds");
        }
        m.interval_s = it->get<double>();
      }
      std::string encoding;
      if (Status s = optional_string(obj, "encoding", 16, encoding); !s) return s;
      if (!encoding.empty()) {
        m.encoding = twins::parse_encoding(encoding);
        if (!m.encoding) return invalid("'encoding' must be \"json\" or \"protobuf\"");
      }
      return DeviceMessage(m);
    }
    case InboundKind::kCommandResult: {
      if (Status s = only_fields(obj, {"status", "result", "error"}, "a command result"); !s)
        return s;
      CommandResultMessage m;
      std::string status;
      if (Status s = optional_string(obj, "status", 16, status); !s) return s;
      auto parsed = twins::parse_result_status(status);
      if (!parsed) {
        return invalid(
            "'status' must be \"succeeded\", \"failed\", \"rejected\" or "
            "\"in_progress\"");
      }
      m.status = *parsed;
      if (auto it = obj.find("result"); it != obj.end() && !it->is_null()) {
        if (Status s = twins::check_state_document(*it, limits, "result"); !s) return s;
        m.result = *it;
      }
      if (Status s = optional_string(obj, "error", kMaxErrorBytes, m.error); !s) return s;
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kDelete:
    case InboundKind::kJobsQuery:
      break;
  }
  return malformed("unknown message kind");
}

// ---- Protobuf ---------------------------------------------------------------------------------

template <typename Message>
Status parse_proto(std::string_view payload, const Limits& limits, Message& msg) {
  if (payload.size() > limits.max_payload_bytes()) {
    return Status(StatusCode::kTooLarge, "payload of " + std::to_string(payload.size()) +
                                             " bytes exceeds the limit of " +
                                             std::to_string(limits.max_payload_bytes()) + " bytes");
  }
  google::protobuf::LogSilencer quiet;  // invalid UTF-8 etc. are reported to the device instead
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(payload.data()),
                                            static_cast<int>(payload.size()));
  // A Struct level costs three message levels (Struct, map entry, Value).
  in.SetRecursionLimit(3 * (limits.max_depth + 1) + 6);
  if (!msg.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
    return malformed("malformed Protobuf: not a valid doppel.wire." +
                     std::string(Message::descriptor()->name()) +
                     " message (truncated, invalid UTF-8 in a string, or nested too deeply)");
  }
  return Status::ok();
}

Result<json> struct_field(const google::protobuf::Struct& s, const Limits& limits,
                          std::string_view what) {
  auto j = detail::to_json(s);
  if (!j) return Status(j.status().code(), std::string(what) + ": " + j.status().message());
  if (twins::depth_of(*j) > limits.max_depth) {
    return Status(StatusCode::kTooDeep, std::string(what) + " nests deeper than " +
                                            std::to_string(limits.max_depth) + " levels");
  }
  return j;
}

Result<DeviceMessage> decode_proto(InboundKind kind, std::string_view payload,
                                   const Limits& limits) {
  switch (kind) {
    case InboundKind::kReported: {
      wire::Reported p;
      if (Status s = parse_proto(payload, limits, p); !s) return s;
      if (!p.has_state()) return invalid("'state' is required: the reported merge patch");
      auto state = struct_field(p.state(), limits, "state");
      if (!state) return state.status();
      if (p.token().size() > kMaxTokenBytes) return invalid("'token' is longer than 256 bytes");
      ReportedMessage m;
      m.state = std::move(*state);
      m.token = p.token();
      if (p.has_ts()) {
        if (p.ts() < 0) return invalid("'ts' must be a non-negative integer");
        m.device_ts = p.ts();
      }
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kGet: {
      wire::Get p;
      if (Status s = parse_proto(payload, limits, p); !s) return s;
      if (p.token().size() > kMaxTokenBytes) return invalid("'token' is longer than 256 bytes");
      return DeviceMessage(GetMessage{p.token()});
    }
    case InboundKind::kStatus: {
      wire::Status p;
      if (Status s = parse_proto(payload, limits, p); !s) return s;
      if (p.state() != "online" && p.state() != "offline") {
        return invalid("'state' must be \"online\" or \"offline\"");
      }
      StatusMessage m;
      m.online = p.state() == "online";
      if (p.has_interval_s()) {
        if (!(p.interval_s() > 0) || p.interval_s() > 86400 * 365) {
          return invalid("'interval_s' must be a positive number of seconds");
        }
        m.interval_s = p.interval_s();
      }
      if (!p.encoding().empty()) {
        m.encoding = twins::parse_encoding(p.encoding());
        if (!m.encoding) return invalid("'encoding' must be \"json\" or \"protobuf\"");
      }
      return DeviceMessage(m);
    }
    case InboundKind::kCommandResult: {
      wire::CommandResult p;
      if (Status s = parse_proto(payload, limits, p); !s) return s;
      auto status = twins::parse_result_status(p.status());
      if (!status) {
        return invalid(
            "'status' must be \"succeeded\", \"failed\", \"rejected\" or "
            "\"in_progress\"");
      }
      CommandResultMessage m;
      m.status = *status;
      if (p.has_result()) {
        auto result = struct_field(p.result(), limits, "result");
        if (!result) return result.status();
        if (Status s = twins::check_state_document(*result, limits, "result"); !s) return s;
        m.result = std::move(*result);
      }
      if (p.error().size() > kMaxErrorBytes) return invalid("'error' is longer than 1024 bytes");
      m.error = p.error();
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kDelete:
    case InboundKind::kJobsQuery:
      break;
  }
  return malformed("unknown message kind");
}

DeltaOut delta_out(uint64_t version, json state) {
  DeltaOut d;
  d.version = version;
  d.state = std::move(state);
  return d;
}

}  // namespace

WireCodec::WireCodec() { GOOGLE_PROTOBUF_VERIFY_VERSION; }

Result<DeviceMessage> WireCodec::decode(InboundKind kind, std::string_view payload,
                                        twins::Wire wire, const Limits& limits) const {
  if (wire.dialect == twins::Dialect::kAws) return decode_aws(kind, payload, limits);
  if (kind == InboundKind::kDelete || kind == InboundKind::kJobsQuery) {
    return malformed("deletes and jobs requests exist in the AWS dialect only");
  }
  return wire.encoding == Encoding::kProtobuf ? decode_proto(kind, payload, limits)
                                              : decode_json(kind, payload, limits);
}

using twins::Overloaded;  // a DeviceOutput alternative without an encoder fails to compile

std::string WireCodec::refused_token(std::string_view payload, twins::Wire wire,
                                     const Limits& limits) const {
  return wire.dialect == twins::Dialect::kAws ? aws_client_token(payload, limits) : std::string();
}

std::string WireCodec::encode(const DeviceOutput& output, twins::Wire wire) const {
  if (wire.dialect == twins::Dialect::kAws) return encode_aws(output);
  // A shadow answer exists in the AWS dialect only; its body is JSON whatever the encoding.
  if (const auto* reply = std::get_if<twins::ShadowReply>(&output)) return reply->to_json_text();
  if (wire.encoding == Encoding::kJson) {
    const json j = std::visit(
        Overloaded{[](const DeltaOut& d) {
                     return json{{"version", d.version}, {"state", d.state}};
                   },
                   [](const TwinOut& t) {
                     json doc = t.document;
                     if (!t.token.empty()) doc["token"] = t.token;
                     return doc;
                   },
                   [](const CommandOut& c) {
                     json cmd = {{"id", c.id}, {"name", c.name}, {"args", c.args}};
                     if (c.expires_at) cmd["expires_at"] = *c.expires_at;
                     return cmd;
                   },
                   [](const ErrorOut& e) {
                     json err = {{"topic", e.topic}, {"code", e.code}, {"message", e.message}};
                     if (!e.token.empty()) err["token"] = e.token;
                     return err;
                   },
                   [](const twins::ShadowReply&) { return json(); }},  // answered above
        output);
    return twins::to_text(j);
  }
  return std::visit(
      Overloaded{[](const DeltaOut& d) {
                   wire::Delta p;
                   p.set_version(d.version);
                   detail::to_struct(d.state, *p.mutable_state());
                   return p.SerializeAsString();
                 },
                 [](const TwinOut& t) {
                   wire::TwinDocument p;
                   const json& doc = t.document;
                   p.set_id(doc.value("id", std::string()));
                   p.set_version(doc.value("version", uint64_t{0}));
                   detail::to_struct(doc.value("desired", json::object()), *p.mutable_desired());
                   detail::to_struct(doc.value("reported", json::object()), *p.mutable_reported());
                   detail::to_struct(doc.value("delta", json::object()), *p.mutable_delta());
                   p.set_desired_version(doc.value("desired_version", uint64_t{0}));
                   p.set_reported_version(doc.value("reported_version", uint64_t{0}));
                   p.set_token(t.token);
                   return p.SerializeAsString();
                 },
                 [](const CommandOut& c) {
                   wire::Command p;
                   p.set_id(c.id);
                   p.set_name(c.name);
                   detail::to_struct(c.args, *p.mutable_args());
                   if (c.expires_at) p.set_expires_at(*c.expires_at);
                   return p.SerializeAsString();
                 },
                 [](const ErrorOut& e) {
                   wire::Error p;
                   p.set_topic(e.topic);
                   p.set_code(e.code);
                   p.set_message(e.message);
                   p.set_token(e.token);
                   return p.SerializeAsString();
                 },
                 [](const twins::ShadowReply& r) { return r.to_json_text(); }},
      output);
}

std::string WireCodec::encode_device(const DeviceMessage& message, Encoding encoding) const {
  if (std::holds_alternative<twins::DeleteMessage>(message) ||
      std::holds_alternative<twins::JobsQueryMessage>(message) ||
      std::holds_alternative<twins::JobUpdateMessage>(message)) {
    return encode_aws_device(message);
  }
  if (encoding == Encoding::kJson) {
    json j;
    if (const auto* r = std::get_if<ReportedMessage>(&message)) {
      j = {{"state", r->state}};
      if (!r->token.empty()) j["token"] = r->token;
      if (r->device_ts) j["ts"] = *r->device_ts;
    } else if (const auto* g = std::get_if<GetMessage>(&message)) {
      j = json::object();
      if (!g->token.empty()) j["token"] = g->token;
    } else if (const auto* s = std::get_if<StatusMessage>(&message)) {
      j = {{"state", s->online ? "online" : "offline"}};
      if (s->interval_s) j["interval_s"] = *s->interval_s;
      if (s->encoding) j["encoding"] = twins::to_string(*s->encoding);
    } else if (const auto* c = std::get_if<CommandResultMessage>(&message)) {
      j = {{"status", twins::to_string(c->status)}};
      if (!c->result.is_null()) j["result"] = c->result;
      if (!c->error.empty()) j["error"] = c->error;
    }
    return twins::to_text(j);
  }
  if (const auto* r = std::get_if<ReportedMessage>(&message)) {
    wire::Reported p;
    detail::to_struct(r->state, *p.mutable_state());
    p.set_token(r->token);
    if (r->device_ts) p.set_ts(*r->device_ts);
    return p.SerializeAsString();
  }
  if (const auto* g = std::get_if<GetMessage>(&message)) {
    wire::Get p;
    p.set_token(g->token);
    return p.SerializeAsString();
  }
  if (const auto* s = std::get_if<StatusMessage>(&message)) {
    wire::Status p;
    p.set_state(s->online ? "online" : "offline");
    if (s->interval_s) p.set_interval_s(*s->interval_s);
    if (s->encoding) p.set_encoding(std::string(twins::to_string(*s->encoding)));
    return p.SerializeAsString();
  }
  const auto& c = std::get<CommandResultMessage>(message);
  wire::CommandResult p;
  p.set_status(std::string(twins::to_string(c.status)));
  if (c.result.is_object()) detail::to_struct(c.result, *p.mutable_result());
  p.set_error(c.error);
  return p.SerializeAsString();
}

Result<DeviceOutput> WireCodec::decode_device(OutboundKind kind, std::string_view payload,
                                              Encoding encoding) const {
  Limits generous;
  generous.max_document_bytes = 1 << 20;
  generous.max_depth = 64;
  if (encoding == Encoding::kJson) {
    auto doc = twins::parse_json(payload, generous.max_payload_bytes(), generous.max_depth);
    if (!doc) return doc.status();
    const json& j = *doc;
    if (!j.is_object()) return malformed("not a JSON object");
    try {
      switch (kind) {
        case OutboundKind::kDelta:
          return DeviceOutput(delta_out(j.at("version").get<uint64_t>(), j.at("state")));
        case OutboundKind::kTwin: {
          json document = j;
          std::string token = document.value("token", std::string());
          document.erase("token");
          return DeviceOutput(TwinOut{std::move(document), std::move(token)});
        }
        case OutboundKind::kCommand: {
          CommandOut c{j.at("id").get<std::string>(), j.at("name").get<std::string>(),
                       j.value("args", json::object()), std::nullopt};
          if (j.contains("expires_at")) c.expires_at = j.at("expires_at").get<int64_t>();
          return DeviceOutput(std::move(c));
        }
        case OutboundKind::kError:
          return DeviceOutput(ErrorOut{j.value("topic", ""), j.value("code", ""),
                                       j.value("message", ""), j.value("token", ""), 0});
        case OutboundKind::kReply:
          return DeviceOutput(twins::ShadowReply{twins::ShadowOp::kUpdate, j, {}});
      }
    } catch (const json::exception& e) {
      return malformed(std::string("unexpected message shape: ") + e.what());
    }
    return malformed("unknown kind");
  }
  switch (kind) {
    case OutboundKind::kDelta: {
      wire::Delta p;
      if (Status s = parse_proto(payload, generous, p); !s) return s;
      auto state = detail::to_json(p.state());
      if (!state) return state.status();
      return DeviceOutput(delta_out(p.version(), std::move(*state)));
    }
    case OutboundKind::kTwin: {
      wire::TwinDocument p;
      if (Status s = parse_proto(payload, generous, p); !s) return s;
      auto desired = detail::to_json(p.desired());
      auto reported = detail::to_json(p.reported());
      auto delta = detail::to_json(p.delta());
      if (!desired || !reported || !delta) return invalid("non-finite number in a document");
      json doc = {{"id", p.id()},
                  {"version", p.version()},
                  {"desired", std::move(*desired)},
                  {"reported", std::move(*reported)},
                  {"delta", std::move(*delta)},
                  {"desired_version", p.desired_version()},
                  {"reported_version", p.reported_version()}};
      return DeviceOutput(TwinOut{std::move(doc), p.token()});
    }
    case OutboundKind::kCommand: {
      wire::Command p;
      if (Status s = parse_proto(payload, generous, p); !s) return s;
      auto args = detail::to_json(p.args());
      if (!args) return args.status();
      CommandOut c{p.id(), p.name(), std::move(*args), std::nullopt};
      if (p.has_expires_at()) c.expires_at = p.expires_at();
      return DeviceOutput(std::move(c));
    }
    case OutboundKind::kError: {
      wire::Error p;
      if (Status s = parse_proto(payload, generous, p); !s) return s;
      return DeviceOutput(ErrorOut{p.topic(), p.code(), p.message(), p.token(), 0});
    }
    case OutboundKind::kReply:
      break;
  }
  return malformed("unknown kind");
}

}  // namespace doppel::mqtt
