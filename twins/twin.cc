#include "twins/twin.h"

#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

json optional_ms(const std::optional<Millis>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

std::string_view to_string(Encoding v) { return v == Encoding::kProtobuf ? "protobuf" : "json"; }

std::string_view to_string(ConnectionState v) {
  switch (v) {
    case ConnectionState::kOnline:
      return "online";
    case ConnectionState::kOffline:
      return "offline";
    case ConnectionState::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view to_string(LivenessState v) {
  switch (v) {
    case LivenessState::kFresh:
      return "fresh";
    case LivenessState::kStale:
      return "stale";
    case LivenessState::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view to_string(ReconcileState v) {
  switch (v) {
    case ReconcileState::kPending:
      return "pending";
    case ReconcileState::kFailed:
      return "failed";
    case ReconcileState::kConverged:
      break;
  }
  return "converged";
}

std::string_view to_string(CommandStrategy v) {
  return v == CommandStrategy::kBurst ? "burst" : "sequential";
}

std::string_view to_string(CommandStatus v) {
  switch (v) {
    case CommandStatus::kQueued:
      return "queued";
    case CommandStatus::kSent:
      return "sent";
    case CommandStatus::kSucceeded:
      return "succeeded";
    case CommandStatus::kFailed:
      return "failed";
    case CommandStatus::kRejected:
      return "rejected";
    case CommandStatus::kExpired:
      return "expired";
    case CommandStatus::kTimedOut:
      return "timed_out";
    case CommandStatus::kCancelled:
      return "cancelled";
  }
  return "queued";
}

std::optional<Encoding> parse_encoding(std::string_view s) {
  if (s == "json") return Encoding::kJson;
  if (s == "protobuf") return Encoding::kProtobuf;
  return std::nullopt;
}

std::optional<CommandStrategy> parse_strategy(std::string_view s) {
  if (s == "sequential") return CommandStrategy::kSequential;
  if (s == "burst") return CommandStrategy::kBurst;
  return std::nullopt;
}

std::optional<CommandStatus> parse_command_status(std::string_view s) {
  for (auto st : {CommandStatus::kQueued, CommandStatus::kSent, CommandStatus::kSucceeded,
                  CommandStatus::kFailed, CommandStatus::kRejected, CommandStatus::kExpired,
                  CommandStatus::kTimedOut, CommandStatus::kCancelled}) {
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

bool is_terminal(CommandStatus s) {
  return s != CommandStatus::kQueued && s != CommandStatus::kSent;
}

json twin_document(const Twin& twin, Millis stale_after_ms) {
  json doc = device_twin_document(twin);
  doc["metadata"] = {{"desired", twin.desired_meta},
                     {"reported", render_reported_meta(twin.reported, twin.reported_meta)}};
  doc["connection"] = {{"state", to_string(twin.connection)},
                       {"since", twin.connection_since ? json(twin.connection_since) : json()}};
  doc["liveness"] = {{"state", to_string(twin.liveness)},
                     {"since", twin.liveness_since ? json(twin.liveness_since) : json()},
                     {"last_seen", optional_ms(twin.last_seen)},
                     {"stale_after_s", static_cast<double>(stale_after_ms) / 1000.0}};
  doc["reconcile"] = {{"state", to_string(twin.reconcile)},
                      {"attempts", twin.reconcile_attempts},
                      {"desired_version", twin.reconcile_desired_version},
                      {"last_sent", optional_ms(twin.reconcile_last_sent)},
                      {"next_retry", optional_ms(twin.reconcile_next_retry)}};
  size_t queued = 0;
  size_t sent = 0;
  for (const auto& c : twin.commands) {
    if (c.status == CommandStatus::kQueued) ++queued;
    if (c.status == CommandStatus::kSent) ++sent;
  }
  doc["commands"] = {
      {"strategy", to_string(twin.command_strategy)}, {"queued", queued}, {"sent", sent}};
  doc["device"] = {{"encoding", to_string(twin.encoding)},
                   {"interval_s", twin.interval_s ? json(*twin.interval_s) : json()}};
  doc["stale_after_s"] = twin.stale_after_s ? json(*twin.stale_after_s) : json();
  doc["tags"] = twin.tags;
  doc["created_at"] = twin.created_at;
  doc["updated_at"] = twin.updated_at;
  return doc;
}

json render_reported_meta(const json& reported, const json& meta) {
  if (reported.is_object()) {
    json out = json::object();
    if (!meta.is_object()) return out;
    for (const auto& [key, value] : reported.items()) {
      auto it = meta.find(key);
      if (it != meta.end()) out[key] = render_reported_meta(value, *it);
    }
    return out;
  }
  if (meta.is_number()) return {{"ts", meta}};
  if (meta.is_array() && meta.size() == 2) return {{"ts", meta[0]}, {"device_ts", meta[1]}};
  return meta;
}

json device_twin_document(const Twin& twin) {
  return {{"id", twin.id},
          {"version", twin.version},
          {"desired", twin.desired},
          {"reported", twin.reported},
          {"delta", compute_delta(twin.desired, twin.reported)},
          {"desired_version", twin.desired_version},
          {"reported_version", twin.reported_version}};
}

json command_document(const Command& c) {
  json history = json::array();
  for (const auto& t : c.history)
    history.push_back({{"status", to_string(t.status)}, {"at", t.at}});
  return {{"id", c.id},
          {"seq", c.seq},
          {"name", c.name},
          {"args", c.args},
          {"status", to_string(c.status)},
          {"attempts", c.attempts},
          {"idempotency_key", c.idempotency_key.empty() ? json() : json(c.idempotency_key)},
          {"created_at", c.created_at},
          {"expires_at", optional_ms(c.expires_at)},
          {"ack_deadline", optional_ms(c.ack_deadline)},
          {"history", std::move(history)},
          {"result", c.result},
          {"error", c.error.empty() ? json() : json(c.error)}};
}

Command* find_command(Twin& twin, std::string_view command_id) {
  for (auto& c : twin.commands) {
    if (c.id == command_id) return &c;
  }
  return nullptr;
}

size_t unfinished_commands(const Twin& twin) {
  size_t n = 0;
  for (const auto& c : twin.commands) n += is_terminal(c.status) ? 0 : 1;
  return n;
}

}  // namespace doppel::twins
