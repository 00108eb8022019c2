#include "twins/twin.h"

#include "twins/closed_set.h"
#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

json optional_ms(const std::optional<Millis>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

namespace {

constexpr NameTable<Encoding, 2> kEncodingNames{{"json", "protobuf"}};
static_assert(kEncodingNames.covers(Encoding::kProtobuf));
constexpr NameTable<Dialect, 2> kDialectNames{{"doppel", "aws"}};
static_assert(kDialectNames.covers(Dialect::kAws));
constexpr NameTable<ConnectionState, 3> kConnectionNames{{"unknown", "online", "offline"}};
static_assert(kConnectionNames.covers(ConnectionState::kOffline));
constexpr NameTable<LivenessState, 3> kLivenessNames{{"unknown", "fresh", "stale"}};
static_assert(kLivenessNames.covers(LivenessState::kStale));
constexpr NameTable<ReconcileState, 3> kReconcileNames{{"converged", "pending", "failed"}};
static_assert(kReconcileNames.covers(ReconcileState::kFailed));
constexpr NameTable<CommandStrategy, 2> kStrategyNames{{"sequential", "burst"}};
static_assert(kStrategyNames.covers(CommandStrategy::kBurst));
constexpr NameTable<CommandStatus, kCommandStatusCount> kCommandStatusNames{
    {"queued", "sent", "succeeded", "failed", "rejected", "expired", "timed_out", "cancelled"}};
static_assert(kCommandStatusNames.covers(CommandStatus::kCancelled));

}  // namespace

std::string_view to_string(Encoding v) { return kEncodingNames.name(v); }
std::string_view to_string(Dialect v) { return kDialectNames.name(v); }
std::string_view to_string(ConnectionState v) { return kConnectionNames.name(v); }
std::string_view to_string(LivenessState v) { return kLivenessNames.name(v); }
std::string_view to_string(ReconcileState v) { return kReconcileNames.name(v); }
std::string_view to_string(CommandStrategy v) { return kStrategyNames.name(v); }
std::string_view to_string(CommandStatus v) { return kCommandStatusNames.name(v); }

std::optional<Encoding> parse_encoding(std::string_view s) { return kEncodingNames.parse(s); }
std::optional<Dialect> parse_dialect(std::string_view s) { return kDialectNames.parse(s); }
std::optional<CommandStrategy> parse_strategy(std::string_view s) {
  return kStrategyNames.parse(s);
}
std::optional<CommandStatus> parse_command_status(std::string_view s) {
  return kCommandStatusNames.parse(s);
}
std::optional<ConnectionState> parse_connection_state(std::string_view s) {
  return kConnectionNames.parse(s);
}
std::optional<LivenessState> parse_liveness_state(std::string_view s) {
  return kLivenessNames.parse(s);
}
std::optional<ReconcileState> parse_reconcile_state(std::string_view s) {
  return kReconcileNames.parse(s);
}

bool is_terminal(CommandStatus s) {
  return s != CommandStatus::kQueued && s != CommandStatus::kSent;
}

CommandCounts command_counts(const Twin& twin) {
  CommandCounts n;
  for (const auto& c : twin.commands) {
    n.queued += c.status == CommandStatus::kQueued ? 1 : 0;
    n.sent += c.status == CommandStatus::kSent ? 1 : 0;
  }
  return n;
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
  const CommandCounts counts = command_counts(twin);
  doc["commands"] = {{"strategy", to_string(twin.command_strategy)},
                     {"queued", counts.queued},
                     {"sent", counts.sent}};
  doc["device"] = {{"encoding", to_string(twin.encoding)},
                   {"dialect", to_string(twin.dialect)},
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
