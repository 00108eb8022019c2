#include "twins/record.h"

namespace doppel::twins {
namespace {

json opt(const std::optional<Millis>& v) { return v ? json(*v) : json(); }
json opt(const std::optional<double>& v) { return v ? json(*v) : json(); }

std::optional<Millis> get_opt_ms(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<Millis>();
}

std::optional<double> get_opt_s(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<double>();
}

std::string pack(const json& j) {
  std::vector<uint8_t> bytes = json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

json unpack(const std::string& s) { return json::from_msgpack(s.begin(), s.end()); }

Command command_from(const CommandRecord& r) {
  const json b = unpack(r.body);
  Command c;
  c.id = r.id;
  c.seq = r.seq;
  c.name = b.at("name").get<std::string>();
  c.args = b.at("args");
  c.idempotency_key = b.value("key", std::string());
  auto status = parse_command_status(r.status);
  if (!status) throw std::runtime_error("unknown command status '" + r.status + "'");
  c.status = *status;
  c.attempts = b.value("attempts", 0u);
  c.created_at = b.at("created").get<Millis>();
  c.expires_at = get_opt_ms(b, "expires");
  c.ack_deadline = get_opt_ms(b, "ack");
  for (const auto& h : b.at("history")) {
    auto st = parse_command_status(h.at(0).get<std::string>());
    if (!st) throw std::runtime_error("unknown command status in history");
    c.history.push_back({*st, h.at(1).get<Millis>()});
  }
  c.result = b.value("result", json());
  c.error = b.value("error", std::string());
  return c;
}

}  // namespace

TwinRecord to_record(Twin& twin, std::optional<Millis> next_deadline) {
  TwinRecord r;
  r.id = twin.id;
  r.version = twin.version;
  r.desired = to_text(twin.desired);
  r.reported = to_text(twin.reported);
  twin.desired_bytes = r.desired.size();
  twin.reported_bytes = r.reported.size();
  const json body = {
      {"dv", twin.desired_version},
      {"rv", twin.reported_version},
      {"dm", twin.desired_meta},
      {"rm", twin.reported_meta},
      {"tags", twin.tags},
      {"conn", to_string(twin.connection)},
      {"conn_since", twin.connection_since},
      {"live", to_string(twin.liveness)},
      {"live_since", twin.liveness_since},
      {"seen", opt(twin.last_seen)},
      {"interval", opt(twin.interval_s)},
      {"stale_after", opt(twin.stale_after_s)},
      {"enc", to_string(twin.encoding)},
      {"rec", to_string(twin.reconcile)},
      {"rec_att", twin.reconcile_attempts},
      {"rec_dv", twin.reconcile_desired_version},
      {"rec_sent", opt(twin.reconcile_last_sent)},
      {"rec_next", opt(twin.reconcile_next_retry)},
      {"strategy", to_string(twin.command_strategy)},
      {"next_seq", twin.next_command_seq},
      {"created", twin.created_at},
  };
  r.body = pack(body);
  r.next_deadline = next_deadline;
  r.updated_at = twin.updated_at;
  return r;
}

CommandRecord to_record(const Command& c) {
  json history = json::array();
  for (const auto& h : c.history) history.push_back({to_string(h.status), h.at});
  const json body = {{"name", c.name},
                     {"args", c.args},
                     {"key", c.idempotency_key},
                     {"attempts", c.attempts},
                     {"created", c.created_at},
                     {"expires", opt(c.expires_at)},
                     {"ack", opt(c.ack_deadline)},
                     {"history", std::move(history)},
                     {"result", c.result},
                     {"error", c.error}};
  return CommandRecord{c.seq, c.id, std::string(to_string(c.status)), pack(body)};
}

Result<Twin> from_record(const StoredTwin& stored) {
  const TwinRecord& r = stored.twin;
  try {
    const json b = unpack(r.body);
    Twin t;
    t.id = r.id;
    t.version = r.version;
    t.desired = json::parse(r.desired);
    t.reported = json::parse(r.reported);
    t.desired_bytes = r.desired.size();
    t.reported_bytes = r.reported.size();
    t.desired_version = b.at("dv").get<uint64_t>();
    t.reported_version = b.at("rv").get<uint64_t>();
    t.desired_meta = b.at("dm");
    t.reported_meta = b.at("rm");
    t.tags = b.at("tags");
    const std::string conn = b.at("conn").get<std::string>();
    t.connection = conn == "online"    ? ConnectionState::kOnline
                   : conn == "offline" ? ConnectionState::kOffline
                                       : ConnectionState::kUnknown;
    t.connection_since = b.at("conn_since").get<Millis>();
    const std::string live = b.at("live").get<std::string>();
    t.liveness = live == "fresh"   ? LivenessState::kFresh
                 : live == "stale" ? LivenessState::kStale
                                   : LivenessState::kUnknown;
    t.liveness_since = b.value("live_since", Millis{0});
    t.last_seen = get_opt_ms(b, "seen");
    t.interval_s = get_opt_s(b, "interval");
    t.stale_after_s = get_opt_s(b, "stale_after");
    t.encoding = parse_encoding(b.at("enc").get<std::string>()).value_or(Encoding::kJson);
    const std::string rec = b.at("rec").get<std::string>();
    t.reconcile = rec == "pending"  ? ReconcileState::kPending
                  : rec == "failed" ? ReconcileState::kFailed
                                    : ReconcileState::kConverged;
    t.reconcile_attempts = b.at("rec_att").get<uint32_t>();
    t.reconcile_desired_version = b.at("rec_dv").get<uint64_t>();
    t.reconcile_last_sent = get_opt_ms(b, "rec_sent");
    t.reconcile_next_retry = get_opt_ms(b, "rec_next");
    t.command_strategy =
        parse_strategy(b.at("strategy").get<std::string>()).value_or(CommandStrategy::kSequential);
    t.next_command_seq = b.at("next_seq").get<uint64_t>();
    t.created_at = b.at("created").get<Millis>();
    t.updated_at = r.updated_at;
    for (const auto& c : stored.commands) t.commands.push_back(command_from(c));
    return t;
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal,
                  "stored twin '" + r.id + "' cannot be read: " + std::string(e.what()));
  }
}

}  // namespace doppel::twins
