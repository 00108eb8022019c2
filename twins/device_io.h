// What devices send and receive, independent of wire encoding (DESIGN §4). The mqtt module maps
// these to topics and to JSON or Protobuf bytes through the DeviceCodec port (ports.h).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <variant>

#include "twins/clock.h"
#include "twins/document.h"
#include "twins/twin.h"

namespace doppel::twins {

// kDelete and kJobsQuery exist in the AWS dialect only: a device deleting its shadow, and one
// asking about its jobs (AWS IoT Jobs, which Doppel serves from the command queue). In that
// dialect kCommandResult is a job execution update.
enum class InboundKind { kReported, kGet, kStatus, kCommandResult, kDelete, kJobsQuery };
constexpr size_t kInboundKindCount = static_cast<size_t>(InboundKind::kJobsQuery) + 1;
enum class ResultStatus { kSucceeded, kFailed, kRejected, kInProgress };

struct ReportedMessage {
  json state = json::object();  // a merge patch
  std::string token;
  std::optional<Millis> device_ts;
  // The AWS dialect's shadow update: a merge patch of desired from the device itself (AWS lets a
  // device clear what it applied), and the document version the device expects (else 409).
  std::optional<json> desired;
  std::optional<uint64_t> expected_version;
};
struct GetMessage {
  std::string token;
};
// The AWS dialect: the device deletes its shadow (desired and reported cleared).
struct DeleteMessage {
  std::string token;
  std::optional<uint64_t> expected_version;
};
struct StatusMessage {
  bool online = true;
  std::optional<double> interval_s;
  std::optional<Encoding> encoding;
};
struct CommandResultMessage {
  ResultStatus status = ResultStatus::kSucceeded;
  json result;  // null when absent
  std::string error;
};
// The AWS dialect's Jobs: a question about the device's jobs (which one the topic says), and an
// update of one execution (its command's result, or IN_PROGRESS).
struct JobsQueryMessage {
  std::string token;
};
struct JobUpdateMessage {
  CommandResultMessage result;
  std::string token;
  std::optional<double> step_timeout_s;  // stepTimeoutInMinutes: the next deadline
};
using DeviceMessage = std::variant<ReportedMessage, GetMessage, StatusMessage, CommandResultMessage,
                                   DeleteMessage, JobsQueryMessage, JobUpdateMessage>;

// kReply exists in the AWS dialect only: a shadow request's `accepted` answer or the
// `update/documents` message.
enum class OutboundKind { kDelta, kTwin, kCommand, kError, kReply };
constexpr size_t kOutboundKindCount = static_cast<size_t>(OutboundKind::kReply) + 1;

// The AWS dialect's shadow operations, which name its reply topics.
enum class ShadowOp { kUpdate, kGet, kDelete, kDocuments };

struct DeltaOut {
  uint64_t version = 0;  // the desired version
  json state = json::object();
  // AWS dialect: the twin's document version, and the delta's metadata ({"timestamp": s} leaves).
  uint64_t document_version = 0;
  json metadata;
  Millis at = 0;  // when it was sent
};
struct TwinOut {
  json document;  // device_twin_document()
  std::string token;
};
struct CommandOut {
  std::string id;
  std::string name;
  json args = json::object();
  std::optional<Millis> expires_at;
};
struct ErrorOut {
  std::string topic;
  std::string code;
  std::string message;
  std::string token;
  Millis at = 0;  // AWS dialect: its `timestamp`
};
// AWS dialect: a shadow answer, built by twins/aws_shadow.h.
struct ShadowReply {
  ShadowOp op = ShadowOp::kUpdate;
  json body;
  // An AWS IoT Jobs answer instead: the topic after $aws/things/{id}/jobs/.
  std::string jobs_topic;
  // When not empty, the body already written as JSON text (and `body` is unused): the answer to
  // every shadow update is on the ingest path, and writing it directly skips building a document.
  std::string text = {};
  // The body as JSON text, whichever way it was given.
  std::string to_json_text() const { return text.empty() ? to_text(body) : text; }
};
using DeviceOutput = std::variant<DeltaOut, TwinOut, CommandOut, ErrorOut, ShadowReply>;

OutboundKind kind_of(const DeviceOutput& output);
std::string_view to_string(InboundKind kind);
std::string_view to_string(ResultStatus status);
std::optional<ResultStatus> parse_result_status(std::string_view s);

// A device message as it arrives, before decoding: the shard decodes it with the device's
// declared encoding unless the transport named one (MQTT 5 content type).
struct DeviceInput {
  std::string device_id;
  InboundKind kind = InboundKind::kReported;
  std::string command_id;  // for kCommandResult
  std::string topic;       // as received, for error replies
  std::string payload;
  std::optional<Encoding> content_encoding;
  Millis received_at = 0;
  Dialect dialect = Dialect::kDoppel;  // which topic scheme it came by
  // From the broker, not the device (its presence plugin: the device disconnected). A Doppel
  // status message; it says nothing about the device's dialect.
  bool from_broker = false;
};

// A message ready for the wire.
struct Outbound {
  std::string device_id;
  OutboundKind kind = OutboundKind::kDelta;
  std::string command_id;  // for kCommand
  Encoding encoding = Encoding::kJson;
  std::string payload;
  Dialect dialect = Dialect::kDoppel;
  ShadowOp op = ShadowOp::kUpdate;  // AWS dialect, kReply and kError: which operation
  std::string jobs_topic;           // ... or which Jobs topic (after $aws/things/{id}/jobs/)
  // Sent for a job's rollout: bulk, which may wait behind the rest of the rollout, and which the
  // channel keeps apart from everything else so that nothing else waits behind it.
  bool bulk = false;
};

// The wire form of a device's messages: its encoding and its topic scheme.
struct Wire {
  Encoding encoding = Encoding::kJson;
  Dialect dialect = Dialect::kDoppel;
  Wire() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): an encoding alone is Doppel's own dialect
  Wire(Encoding e) : encoding(e) {}
  Wire(Encoding e, Dialect d) : encoding(e), dialect(d) {}
};

}  // namespace doppel::twins
