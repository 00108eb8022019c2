// Operator requests as typed values, and their validation from JSON bodies (DESIGN §5, §6).
// The gateway parses HTTP bodies with these; tests use them directly. Pure; thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "twins/document.h"
#include "twins/twin.h"

namespace doppel::twins {

// A JSON field that may be absent, explicitly null (clear), or set.
template <typename T>
struct Field {
  bool present = false;
  std::optional<T> value;  // nullopt with present == true means null
};

// PUT /v1/twins/{id} and PATCH /v1/twins/{id}: provisioning and twin settings.
struct TwinSettings {
  std::optional<json> desired;  // PUT only: replaces desired
  Field<json> tags;             // PUT: replaces; PATCH: merge patch
  Field<double> stale_after_s;
  std::optional<CommandStrategy> command_strategy;
};

struct CommandRequest {
  std::string name;
  json args = json::object();
  std::optional<double> ttl_s;
  std::string idempotency_key;
};

// Parses a PUT (is_patch false) or PATCH body. An empty body is an empty object.
Result<TwinSettings> parse_twin_settings(const json& body, bool is_patch, const Limits& limits);
Result<CommandRequest> parse_command_request(const json& body, const Limits& limits);
// "\"17\"" or "17" -> 17; "*" -> nullopt (any); a weak tag (W/"17") -> kPreconditionFailed (it
// never matches under If-Match's strong comparison); garbage -> kInvalidArgument.
Result<std::optional<uint64_t>> parse_if_match(std::string_view header);

// Requests a shard can run against one twin.
struct GetTwin {};
// Why the twin has not converged, in plain words (explain.h).
struct ExplainTwin {};
struct ProvisionTwin {
  TwinSettings settings;
};
struct PatchTwin {
  TwinSettings settings;
};
struct DeleteTwin {};
struct UpdateDesired {
  json document;  // merge patch, or the whole document when `replace`
  bool replace = false;
  std::optional<uint64_t> if_match;
};
struct EnqueueCommand {
  CommandRequest request;
};
struct ListCommands {
  std::optional<CommandStatus> status;
  uint64_t after_seq = 0;  // paging cursor
  size_t limit = 100;
};
struct GetCommand {
  std::string command_id;
};
struct CancelCommand {
  std::string command_id;
};
struct JobSpec;
// Starts a job's execution on the twin (jobs.h); never creates the twin.
struct RunJob {
  std::shared_ptr<const JobSpec> spec;
};
// The device's credentials changed outside the twin (the gateway's DeviceAuth issued or revoked
// them): recorded as credentials.changed events of the twin, nothing else changes.
struct CredentialChange {
  std::string credential;  // "password" or "certificate"
  std::string action;      // "issued" or "revoked"
  std::string serial;      // a certificate's serial (hex), when one was issued
  size_t count = 1;        // revoked: how many
};
struct RecordCredentials {
  std::vector<CredentialChange> changes;
};
using ApiRequest = std::variant<GetTwin, ExplainTwin, ProvisionTwin, PatchTwin, DeleteTwin,
                                UpdateDesired, EnqueueCommand, ListCommands, GetCommand,
                                CancelCommand, RunJob, RecordCredentials>;

enum class ReplyKind { kOk, kCreated, kAccepted, kNoContent };

struct ApiReply {
  ApiReply() = default;
  explicit ApiReply(Status s) : status(std::move(s)) {}
  ApiReply(Status s, ReplyKind k, json b = json(), std::string e = {})
      : status(std::move(s)), kind(k), body(std::move(b)), etag(std::move(e)) {}

  Status status;
  ReplyKind kind = ReplyKind::kOk;
  json body;
  // Quoted, e.g. "\"17\""; empty when there is none. (A plain string: GCC 12 warns, falsely,
  // that a moved disengaged optional<string> is used uninitialized under -fsanitize=thread.)
  std::string etag;
};

}  // namespace doppel::twins
