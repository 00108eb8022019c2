#include "twins/as_of.h"

#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

// States as events and snapshots name them; an unknown name reads as the state's default.
ConnectionState parse_connection(const std::string& s) {
  return parse_connection_state(s).value_or(ConnectionState::kUnknown);
}
LivenessState parse_liveness(const std::string& s) {
  return parse_liveness_state(s).value_or(LivenessState::kUnknown);
}
ReconcileState parse_reconcile(const std::string& s) {
  return parse_reconcile_state(s).value_or(ReconcileState::kConverged);
}

Status missing(const EventRecord& e, const std::string& what) {
  return Status(StatusCode::kNotFound, "event " + std::to_string(e.seq) + " (" + e.kind +
                                           ") does not follow on: " + what +
                                           " was removed by retention");
}

// Queued and sent commands, as command.changed moves one from `previous` to `status`.
void count_command(HistoryState& s, const json& previous, const std::string& status) {
  auto adjust = [&s](const std::string& st, int64_t by) {
    uint64_t* n = st == "queued" ? &s.commands_queued : st == "sent" ? &s.commands_sent : nullptr;
    if (n != nullptr) *n = by < 0 && *n == 0 ? 0 : *n + by;
  };
  if (previous.is_string()) adjust(previous.get<std::string>(), -1);
  adjust(status, 1);
}

}  // namespace

HistoryState history_state_of(const Twin& twin) {
  HistoryState s;
  s.version = twin.version;
  s.desired_version = twin.desired_version;
  s.reported_version = twin.reported_version;
  s.desired = twin.desired;
  s.reported = twin.reported;
  s.tags = twin.tags;
  s.stale_after_s = twin.stale_after_s;
  s.command_strategy = twin.command_strategy;
  s.connection = twin.connection;
  s.liveness = twin.liveness;
  s.reconcile = twin.reconcile;
  s.reconcile_attempts = twin.reconcile_attempts;
  s.reconcile_desired_version = twin.reconcile_desired_version;
  const CommandCounts counts = command_counts(twin);
  s.commands_queued = counts.queued;
  s.commands_sent = counts.sent;
  s.created_at = twin.created_at;
  return s;
}

std::string snapshot_text(const HistoryState& s) {
  return to_text({{"v", s.version},
                  {"dv", s.desired_version},
                  {"rv", s.reported_version},
                  {"desired", s.desired},
                  {"reported", s.reported},
                  {"tags", s.tags},
                  {"stale_after", s.stale_after_s ? json(*s.stale_after_s) : json()},
                  {"strategy", to_string(s.command_strategy)},
                  {"conn", to_string(s.connection)},
                  {"live", to_string(s.liveness)},
                  {"rec", to_string(s.reconcile)},
                  {"rec_att", s.reconcile_attempts},
                  {"rec_dv", s.reconcile_desired_version},
                  {"queued", s.commands_queued},
                  {"sent", s.commands_sent},
                  {"created", s.created_at}});
}

Result<HistoryState> parse_snapshot(std::string_view text) {
  try {
    const json j = json::parse(text);
    HistoryState s;
    s.version = j.at("v").get<uint64_t>();
    s.desired_version = j.at("dv").get<uint64_t>();
    s.reported_version = j.at("rv").get<uint64_t>();
    s.desired = j.at("desired");
    s.reported = j.at("reported");
    s.tags = j.at("tags");
    if (j.at("stale_after").is_number()) s.stale_after_s = j.at("stale_after").get<double>();
    s.command_strategy =
        parse_strategy(j.at("strategy").get<std::string>()).value_or(CommandStrategy::kSequential);
    s.connection = parse_connection(j.at("conn").get<std::string>());
    s.liveness = parse_liveness(j.at("live").get<std::string>());
    s.reconcile = parse_reconcile(j.at("rec").get<std::string>());
    s.reconcile_attempts = j.at("rec_att").get<uint32_t>();
    s.reconcile_desired_version = j.at("rec_dv").get<uint64_t>();
    s.commands_queued = j.at("queued").get<uint64_t>();
    s.commands_sent = j.at("sent").get<uint64_t>();
    s.created_at = j.at("created").get<Millis>();
    return s;
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal,
                  "a stored history snapshot cannot be read: " + std::string(e.what()));
  }
}

Status replay(HistoryState& s, const EventRecord& e) {
  json f;
  try {
    f = json::parse(e.body);
  } catch (const std::exception& ex) {
    return Status(StatusCode::kInternal,
                  "stored event " + std::to_string(e.seq) + " cannot be read: " + ex.what());
  }
  const bool content = e.kind == "desired.updated" || e.kind == "reported.updated";
  if (e.version != s.version + (content ? 1 : 0)) {
    return missing(e, "a change between version " + std::to_string(s.version) + " and " +
                          std::to_string(e.version));
  }
  try {
    if (e.kind == "desired.updated") {
      const auto dv = f.at("desired_version").get<uint64_t>();
      if (dv != s.desired_version + 1) return missing(e, "a desired change");
      if (f.value("replace", false)) {
        s.desired = f.at("desired");
      } else {
        apply_merge_patch(s.desired, f.at("patch"));
      }
      s.desired_version = dv;
      s.version = e.version;
    } else if (e.kind == "reported.updated") {
      const auto rv = f.at("reported_version").get<uint64_t>();
      if (rv != s.reported_version + 1) return missing(e, "a reported change");
      apply_merge_patch(s.reported, f.at("patch"));
      s.reported_version = rv;
      s.version = e.version;
    } else if (e.kind == "settings.updated") {
      const json& p = f.at("patch");
      if (auto t = p.find("tags"); t != p.end()) {
        if (f.value("replace", false) || !t->is_object()) {
          s.tags = t->is_object() ? *t : json::object();
        } else {
          apply_merge_patch(s.tags, *t);
        }
      }
      if (auto a = p.find("stale_after_s"); a != p.end()) {
        s.stale_after_s = a->is_number() ? std::optional<double>(a->get<double>()) : std::nullopt;
      }
      if (auto c = p.find("command_strategy"); c != p.end()) {
        s.command_strategy =
            parse_strategy(c->get<std::string>()).value_or(CommandStrategy::kSequential);
      }
    } else if (e.kind == "connection.changed") {
      s.connection = parse_connection(f.at("state").get<std::string>());
    } else if (e.kind == "liveness.changed") {
      s.liveness = parse_liveness(f.at("state").get<std::string>());
    } else if (e.kind == "reconcile.changed") {
      s.reconcile = parse_reconcile(f.at("state").get<std::string>());
      s.reconcile_attempts = f.at("attempts").get<uint32_t>();
      s.reconcile_desired_version = f.at("desired_version").get<uint64_t>();
    } else if (e.kind == "command.changed") {
      count_command(s, f.at("previous"), f.at("status").get<std::string>());
    } else if (e.kind == "twin.created" || e.kind == "twin.deleted") {
      // Only the first event of an incarnation, which its creation snapshot already holds.
      return missing(e, "the twin's incarnation");
    }
  } catch (const std::exception& ex) {
    return Status(StatusCode::kInternal,
                  "stored event " + std::to_string(e.seq) + " is not well-formed: " + ex.what());
  }
  return Status::ok();
}

Result<HistoryState> rebuild(const HistorySlice& slice, uint64_t* at_seq, Millis* at_ts) {
  if (!slice.base) return Status(StatusCode::kNotFound, "no snapshot at or before that point");
  auto state = parse_snapshot(slice.base->state);
  if (!state) return state.status();
  uint64_t seq = slice.base->seq;
  Millis ts = slice.base->ts;
  for (const EventRecord& e : slice.events) {
    if (Status s = replay(*state, e); !s) return s;
    seq = e.seq;
    ts = e.ts;
  }
  if (at_seq != nullptr) *at_seq = seq;
  if (at_ts != nullptr) *at_ts = ts;
  return state;
}

json as_of_document(const std::string& id, const HistoryState& s, uint64_t seq, Millis ts) {
  return {{"id", id},
          {"version", s.version},
          {"desired", s.desired},
          {"reported", s.reported},
          {"delta", compute_delta(s.desired, s.reported)},
          {"desired_version", s.desired_version},
          {"reported_version", s.reported_version},
          {"connection", {{"state", to_string(s.connection)}}},
          {"liveness", {{"state", to_string(s.liveness)}}},
          {"reconcile",
           {{"state", to_string(s.reconcile)},
            {"attempts", s.reconcile_attempts},
            {"desired_version", s.reconcile_desired_version}}},
          {"commands",
           {{"strategy", to_string(s.command_strategy)},
            {"queued", s.commands_queued},
            {"sent", s.commands_sent}}},
          {"stale_after_s", s.stale_after_s ? json(*s.stale_after_s) : json()},
          {"tags", s.tags},
          {"created_at", s.created_at},
          {"as_of", {{"seq", seq}, {"ts", ts}}}};
}

}  // namespace doppel::twins
