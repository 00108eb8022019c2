#include "mqtt/topics.h"

namespace doppel::mqtt {
namespace {

using twins::InboundKind;
using twins::OutboundKind;

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

Status malformed(std::string_view topic, std::string_view prefix) {
  std::string shown(topic.substr(0, 200));
  return Status(StatusCode::kMalformed,
                "topic '" + shown + "' is not a device topic; expected " + std::string(prefix) +
                    "/{id}/reported, /get, /status or /commands/{cmd_id}/result");
}

}  // namespace

Result<InboundTopic> parse_inbound_topic(std::string_view topic, std::string_view prefix,
                                         const twins::Limits& limits) {
  if (topic.size() <= prefix.size() + 1 || topic.substr(0, prefix.size()) != prefix ||
      topic[prefix.size()] != '/') {
    return malformed(topic, prefix);
  }
  const auto parts = split(topic.substr(prefix.size() + 1));
  InboundTopic t;
  if (parts.size() == 2) {
    if (parts[1] == "reported") {
      t.kind = InboundKind::kReported;
    } else if (parts[1] == "get") {
      t.kind = InboundKind::kGet;
    } else if (parts[1] == "status") {
      t.kind = InboundKind::kStatus;
    } else {
      return malformed(topic, prefix);
    }
  } else if (parts.size() == 4 && parts[1] == "commands" && parts[3] == "result") {
    t.kind = InboundKind::kCommandResult;
    if (!twins::valid_command_id(parts[2])) {
      return Status(StatusCode::kInvalidId,
                    "command id '" + std::string(parts[2].substr(0, 64)) +
                        "' is invalid: 1 to 64 of letters, digits, '.', '_', ':', '-'");
    }
    t.command_id = std::string(parts[2]);
  } else {
    return malformed(topic, prefix);
  }
  if (Status s = twins::check_device_id(parts[0], limits); !s) return s;
  t.device_id = std::string(parts[0]);
  return t;
}

std::string outbound_topic(std::string_view prefix, std::string_view device_id, OutboundKind kind,
                           std::string_view command_id) {
  std::string t;
  t.reserve(prefix.size() + device_id.size() + command_id.size() + 16);
  t.append(prefix).append("/").append(device_id);
  switch (kind) {
    case OutboundKind::kDelta:
      t += "/delta";
      break;
    case OutboundKind::kTwin:
      t += "/twin";
      break;
    case OutboundKind::kError:
      t += "/errors";
      break;
    case OutboundKind::kCommand:
      t.append("/commands/").append(command_id);
      break;
    case OutboundKind::kReply:  // the AWS dialect's (aws_topics.h); never in this scheme
      t += "/twin";
      break;
  }
  return t;
}

std::string device_topic(std::string_view prefix, std::string_view device_id, InboundKind kind,
                         std::string_view command_id) {
  std::string t(prefix);
  t.append("/").append(device_id);
  switch (kind) {
    case InboundKind::kReported:
      t += "/reported";
      break;
    case InboundKind::kGet:
      t += "/get";
      break;
    case InboundKind::kStatus:
      t += "/status";
      break;
    case InboundKind::kCommandResult:
      t.append("/commands/").append(command_id).append("/result");
      break;
    case InboundKind::kDelete:  // the AWS dialect's (aws_topics.h); never in this scheme
      t += "/delete";
      break;
    case InboundKind::kJobsQuery:  // the same
      t += "/jobs";
      break;
  }
  return t;
}

std::vector<std::string> gateway_subscriptions(std::string_view prefix) {
  const std::string p(prefix);
  return {p + "/+/reported", p + "/+/get", p + "/+/status", p + "/+/commands/+/result"};
}

std::string raw_device_segment(std::string_view topic, std::string_view prefix) {
  if (topic.size() <= prefix.size() + 1 || topic.substr(0, prefix.size()) != prefix ||
      topic[prefix.size()] != '/') {
    return {};
  }
  std::string_view rest = topic.substr(prefix.size() + 1);
  const std::string_view segment = rest.substr(0, rest.find('/'));
  if (segment.empty() || segment.size() > 256) return {};
  for (char c : segment) {
    if (c == '+' || c == '#' || c == '\0') return {};
  }
  return std::string(segment);
}

}  // namespace doppel::mqtt
