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

enum class InboundKind { kReported, kGet, kStatus, kCommandResult };
constexpr size_t kInboundKindCount = static_cast<size_t>(InboundKind::kCommandResult) + 1;
enum class ResultStatus { kSucceeded, kFailed, kRejected, kInProgress };

struct ReportedMessage {
  json state = json::object();  // a merge patch
  std::string token;
  std::optional<Millis> device_ts;
};
struct GetMessage {
  std::string token;
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
using DeviceMessage =
    std::variant<ReportedMessage, GetMessage, StatusMessage, CommandResultMessage>;

enum class OutboundKind { kDelta, kTwin, kCommand, kError };
constexpr size_t kOutboundKindCount = static_cast<size_t>(OutboundKind::kError) + 1;

struct DeltaOut {
  uint64_t version = 0;
  json state = json::object();
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
};
using DeviceOutput = std::variant<DeltaOut, TwinOut, CommandOut, ErrorOut>;

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
};

// A message ready for the wire.
struct Outbound {
  std::string device_id;
  OutboundKind kind = OutboundKind::kDelta;
  std::string command_id;  // for kCommand
  Encoding encoding = Encoding::kJson;
  std::string payload;
};

}  // namespace doppel::twins
