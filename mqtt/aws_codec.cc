#include "mqtt/aws_codec.h"

#include <utility>

#include "mqtt/detail/json_fields.h"
#include "twins/aws_shadow.h"
#include "twins/overloaded.h"

namespace doppel::mqtt {
namespace {

using detail::invalid;
using detail::malformed;
using detail::only_fields;
using detail::optional_string;
using detail::parse_envelope;
using twins::DeviceMessage;
using twins::InboundKind;
using twins::json;

Status optional_version(const json& obj, std::optional<uint64_t>& out) {
  auto it = obj.find("version");
  if (it == obj.end() || it->is_null()) return Status::ok();
  if (!it->is_number_unsigned()) return invalid("'version' must be a non-negative integer");
  out = it->get<uint64_t>();
  return Status::ok();
}

Status client_token(const json& obj, std::string& out) {
  return optional_string(obj, "clientToken", kAwsMaxClientTokenBytes, out);
}

// A state section: an object (a merge patch) or null (clear it all), moved out of `state`.
Status section(json& state, const char* name, std::optional<json>& out) {
  auto it = state.find(name);
  if (it == state.end()) return Status::ok();
  if (!it->is_object() && !it->is_null()) {
    return invalid(std::string("State node '") + name + "' must be an object or null, not " +
                   it->type_name());
  }
  out = std::move(*it);
  return Status::ok();
}

Result<DeviceMessage> decode_update(json& obj) {
  if (Status s = only_fields(obj, {"state", "clientToken", "version"}, "a shadow update"); !s)
    return s;
  auto state = obj.find("state");
  if (state == obj.end()) return invalid("Missing required node: state");
  if (!state->is_object()) {
    return invalid(std::string("State node must be an object, not ") + state->type_name());
  }
  if (Status s = only_fields(*state, {"desired", "reported"}, "the shadow's state"); !s) return s;
  twins::ReportedMessage m;
  std::optional<json> reported;
  if (Status s = section(*state, "desired", m.desired); !s) return s;
  if (Status s = section(*state, "reported", reported); !s) return s;
  if (!m.desired && !reported) return invalid("State contains neither desired nor reported");
  m.state = reported ? std::move(*reported) : json::object();
  if (Status s = client_token(obj, m.token); !s) return s;
  if (Status s = optional_version(obj, m.expected_version); !s) return s;
  return DeviceMessage(std::move(m));
}

// jobs/{id}/update: {"status", "statusDetails"?, "stepTimeoutInMinutes"?, "clientToken"?, ...}.
Result<DeviceMessage> decode_job_update(json& obj) {
  if (Status s = only_fields(
          obj,
          {"status", "statusDetails", "expectedVersion", "executionNumber",
           "includeJobExecutionState", "includeJobDocument", "stepTimeoutInMinutes", "clientToken"},
          "a job execution update");
      !s)
    return s;
  twins::JobUpdateMessage m;
  std::string status;
  if (Status s = optional_string(obj, "status", 32, status); !s) return s;
  if (status == "IN_PROGRESS") {
    m.result.status = twins::ResultStatus::kInProgress;
  } else if (status == "SUCCEEDED") {
    m.result.status = twins::ResultStatus::kSucceeded;
  } else if (status == "FAILED") {
    m.result.status = twins::ResultStatus::kFailed;
  } else if (status == "REJECTED") {
    m.result.status = twins::ResultStatus::kRejected;
  } else {
    return invalid(
        "'status' must be IN_PROGRESS, SUCCEEDED, FAILED or REJECTED (a device sets no other), "
        "not '" +
        status.substr(0, 32) + "'");
  }
  if (auto it = obj.find("statusDetails"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return invalid("'statusDetails' must be an object of strings");
    for (const auto& [key, value] : it->items()) {
      if (!value.is_string()) return invalid("'statusDetails' must be an object of strings");
    }
    m.result.result = *it;
    if (m.result.status != twins::ResultStatus::kSucceeded && !it->empty()) {
      m.result.error = twins::to_text(*it);
    }
  }
  if (auto it = obj.find("stepTimeoutInMinutes"); it != obj.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 1 || it->get<double>() > 10080) {
      return invalid("'stepTimeoutInMinutes' must be a number of minutes from 1 to 10080");
    }
    m.step_timeout_s = it->get<double>() * 60;
  }
  if (Status s = client_token(obj, m.token); !s) return s;
  return DeviceMessage(std::move(m));
}

// AWS IoT Jobs' errors name their code: {"code": "InvalidRequest", "message", "timestamp",
// "clientToken"}.
json jobs_error(const twins::ErrorOut& e) {
  const StatusCode c = parse_code_name(e.code).value_or(StatusCode::kInternal);
  const bool bad_request = c == StatusCode::kMalformed || c == StatusCode::kInvalidArgument ||
                           c == StatusCode::kInvalidId || c == StatusCode::kTooDeep ||
                           c == StatusCode::kTooLarge;
  const char* code = c == StatusCode::kNotFound             ? "ResourceNotFound"
                     : c == StatusCode::kConflict           ? "InvalidStateTransition"
                     : c == StatusCode::kPreconditionFailed ? "VersionMismatch"
                     : bad_request                          ? "InvalidRequest"
                                                            : "InternalError";
  json err = {{"code", code}, {"message", e.message}, {"timestamp", twins::aws_seconds(e.at)}};
  if (!e.token.empty()) err["clientToken"] = e.token;
  return err;
}

}  // namespace

Result<DeviceMessage> decode_aws(InboundKind kind, std::string_view payload,
                                 const twins::Limits& limits) {
  auto env = parse_envelope(payload, limits, kind != InboundKind::kReported);
  if (!env) return env.status();
  json& obj = *env;
  switch (kind) {
    case InboundKind::kReported:
      return decode_update(obj);
    case InboundKind::kGet: {
      // The SDKs send the version they know with every request; a get ignores it.
      if (Status s = only_fields(obj, {"clientToken", "version"}, "a shadow get"); !s) return s;
      twins::GetMessage m;
      if (Status s = client_token(obj, m.token); !s) return s;
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kDelete: {
      if (Status s = only_fields(obj, {"clientToken", "version"}, "a shadow delete"); !s) return s;
      twins::DeleteMessage m;
      if (Status s = client_token(obj, m.token); !s) return s;
      if (Status s = optional_version(obj, m.expected_version); !s) return s;
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kJobsQuery: {
      // AWS's optional fields of these requests; only the token matters here.
      if (Status s = only_fields(obj,
                                 {"clientToken", "includeJobDocument", "executionNumber",
                                  "statusDetails", "stepTimeoutInMinutes", "thingName", "jobId"},
                                 "a jobs request");
          !s)
        return s;
      twins::JobsQueryMessage m;
      if (Status s = client_token(obj, m.token); !s) return s;
      return DeviceMessage(std::move(m));
    }
    case InboundKind::kCommandResult:
      return decode_job_update(obj);
    case InboundKind::kStatus:
      break;
  }
  return malformed("not a shadow or jobs request");
}

std::string aws_client_token(std::string_view payload, const twins::Limits& limits) {
  auto doc = twins::parse_json(payload, limits.max_payload_bytes(), limits.max_depth + 1);
  if (!doc || !doc->is_object()) return {};
  auto it = doc->find("clientToken");
  if (it == doc->end() || !it->is_string()) return {};
  const auto& token = it->get_ref<const std::string&>();
  return token.size() <= kAwsMaxClientTokenBytes ? token : std::string();
}

int aws_error_code(std::string_view code) {
  const StatusCode c = parse_code_name(code).value_or(StatusCode::kInternal);
  switch (c) {
    case StatusCode::kMalformed:
    case StatusCode::kInvalidArgument:
    case StatusCode::kInvalidId:
    case StatusCode::kTooDeep:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kConflict:
    case StatusCode::kPreconditionFailed:
      return 409;
    case StatusCode::kTooLarge:
      return 413;
    case StatusCode::kQueueFull:
      return 429;
    case StatusCode::kUnavailable:
    case StatusCode::kNotOwner:
      return 503;
    default:
      return 500;
  }
}

std::string encode_aws(const twins::DeviceOutput& output) {
  // A shadow answer is sent as it is (without copying its document first).
  if (const auto* reply = std::get_if<twins::ShadowReply>(&output)) return reply->to_json_text();
  const json j = std::visit(
      twins::Overloaded{
          [](const twins::DeltaOut& d) {
            return json{{"version", d.document_version},
                        {"timestamp", twins::aws_seconds(d.at)},
                        {"state", d.state},
                        {"metadata", d.metadata.is_null() ? json::object() : d.metadata}};
          },
          [](const twins::ShadowReply&) { return json(); },  // answered above
          [](const twins::TwinOut& t) { return t.document; },
          [](const twins::CommandOut& c) {
            json execution = {{"jobId", c.id},
                              {"status", "QUEUED"},
                              {"versionNumber", 1},
                              {"executionNumber", 1},
                              {"jobDocument", {{"operation", c.name}, {"args", c.args}}}};
            return json{{"execution", std::move(execution)}};
          },
          [](const twins::ErrorOut& e) {
            if (e.topic.find("/jobs/") != std::string::npos) return jobs_error(e);
            json err = {{"code", aws_error_code(e.code)},
                        {"message", e.message},
                        {"timestamp", twins::aws_seconds(e.at)}};
            if (!e.token.empty()) err["clientToken"] = e.token;
            return err;
          }},
      output);
  return twins::to_text(j);
}

std::string encode_aws_device(const DeviceMessage& message) {
  json j = json::object();
  std::string token;
  std::optional<uint64_t> version;
  if (const auto* r = std::get_if<twins::ReportedMessage>(&message)) {
    j["state"] = {{"reported", r->state}};
    if (r->desired) j["state"]["desired"] = *r->desired;
    token = r->token;
    version = r->expected_version;
  } else if (const auto* g = std::get_if<twins::GetMessage>(&message)) {
    token = g->token;
  } else if (const auto* d = std::get_if<twins::DeleteMessage>(&message)) {
    token = d->token;
    version = d->expected_version;
  } else if (const auto* q = std::get_if<twins::JobsQueryMessage>(&message)) {
    token = q->token;
  } else if (const auto* u = std::get_if<twins::JobUpdateMessage>(&message)) {
    static constexpr const char* kStatus[] = {"SUCCEEDED", "FAILED", "REJECTED", "IN_PROGRESS"};
    j["status"] = kStatus[static_cast<size_t>(u->result.status)];
    if (u->result.result.is_object()) j["statusDetails"] = u->result.result;
    token = u->token;
  }
  if (!token.empty()) j["clientToken"] = token;
  if (version) j["version"] = *version;
  return twins::to_text(j);
}

}  // namespace doppel::mqtt
