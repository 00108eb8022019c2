#include "mqtt/aws_topics.h"

namespace doppel::mqtt {
namespace {

using twins::InboundKind;
using twins::OutboundKind;
using twins::ShadowOp;

std::string_view op_name(ShadowOp op) {
  switch (op) {
    case ShadowOp::kGet:
      return "get";
    case ShadowOp::kDelete:
      return "delete";
    case ShadowOp::kDocuments:
      return "update";
    case ShadowOp::kUpdate:
      break;
  }
  return "update";
}

Status malformed(std::string_view topic) {
  return Status(StatusCode::kMalformed,
                "topic '" + std::string(topic.substr(0, 200)) +
                    "' is not a shadow request topic; expected $aws/things/{thing}/shadow/update, "
                    "/get or /delete");
}

bool usable_level(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (char c : s) {
    if (c == '+' || c == '#' || c == '\0') return false;
  }
  return true;
}

}  // namespace

bool is_aws_topic(std::string_view topic) { return topic.starts_with(kAwsThingsPrefix); }

Result<InboundTopic> parse_aws_topic(std::string_view topic, const twins::Limits& limits) {
  if (!is_aws_topic(topic)) return malformed(topic);
  std::string_view rest = topic.substr(kAwsThingsPrefix.size());
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return malformed(topic);
  const std::string_view thing = rest.substr(0, slash);
  rest = rest.substr(slash + 1);
  if (rest.starts_with("shadow/name/")) {
    return Status(StatusCode::kNotFound,
                  "named shadows are not offered: only the classic shadow, at "
                  "$aws/things/{thing}/shadow/...");
  }
  InboundTopic t;
  if (rest.starts_with("jobs/")) {
    // jobs/get, jobs/$next/get, jobs/start-next, jobs/{id}/get, jobs/{id}/update
    const std::string_view jobs = rest.substr(5);
    t.kind = InboundKind::kJobsQuery;
    if (jobs == "get") {
      t.command_id = "";
    } else if (jobs == "start-next") {
      t.command_id = std::string(kJobsStartNext);
    } else {
      const size_t cut = jobs.find('/');
      const std::string_view id = jobs.substr(0, cut);
      const std::string_view op = cut == std::string_view::npos ? "" : jobs.substr(cut + 1);
      if (op != "get" && op != "update") return malformed(topic);
      if (id == kJobsNext && op == "get") {
        t.command_id = std::string(kJobsNext);
      } else if (!twins::valid_command_id(id)) {
        return Status(StatusCode::kInvalidId, "job id '" + std::string(id.substr(0, 64)) +
                                                  "' is invalid: 1 to 64 of letters, digits, '.', "
                                                  "'_', ':', '-'");
      } else {
        t.command_id = std::string(id);
        if (op == "update") t.kind = InboundKind::kCommandResult;
      }
    }
  } else if (rest == "shadow/update") {
    t.kind = InboundKind::kReported;
  } else if (rest == "shadow/get") {
    t.kind = InboundKind::kGet;
  } else if (rest == "shadow/delete") {
    t.kind = InboundKind::kDelete;
  } else {
    return malformed(topic);
  }
  if (Status s = twins::check_device_id(thing, limits); !s) return s;
  t.device_id = std::string(thing);
  return t;
}

std::string aws_outbound_topic(std::string_view thing, OutboundKind kind, ShadowOp op) {
  std::string t;
  t.reserve(kAwsThingsPrefix.size() + thing.size() + 32);
  t.append(kAwsThingsPrefix).append(thing).append("/shadow/");
  switch (kind) {
    case OutboundKind::kDelta:
      t += "update/delta";
      break;
    case OutboundKind::kTwin:
      t += "get/accepted";
      break;
    case OutboundKind::kReply:
      t.append(op_name(op)).append(op == ShadowOp::kDocuments ? "/documents" : "/accepted");
      break;
    case OutboundKind::kError:
      t.append(op_name(op)).append("/rejected");
      break;
    case OutboundKind::kCommand:
      t = std::string(kAwsThingsPrefix).append(thing).append("/jobs/notify-next");
      break;
  }
  return t;
}

std::string aws_jobs_topic(std::string_view thing, std::string_view suffix) {
  return std::string(kAwsThingsPrefix).append(thing).append("/jobs/").append(suffix);
}

std::string aws_device_topic(std::string_view thing, ShadowOp op) {
  return std::string(kAwsThingsPrefix).append(thing).append("/shadow/").append(op_name(op));
}

std::string aws_rejected_topic(std::string_view topic) {
  if (!is_aws_topic(topic) || topic.size() > 512) return {};
  const std::string_view rest = topic.substr(kAwsThingsPrefix.size());
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t slash = rest.find('/', start);
    const std::string_view level = rest.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!usable_level(level)) return {};
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::string(topic) + "/rejected";
}

std::vector<std::string> aws_gateway_subscriptions() {
  const std::string p(kAwsThingsPrefix);
  return {p + "+/shadow/update",     p + "+/shadow/get",
          p + "+/shadow/delete",     p + "+/shadow/name/+/update",
          p + "+/shadow/name/+/get", p + "+/shadow/name/+/delete",
          p + "+/jobs/get",          p + "+/jobs/start-next",
          p + "+/jobs/+/get",        p + "+/jobs/+/update"};
}

}  // namespace doppel::mqtt
