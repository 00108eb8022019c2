#include "twins/explain.h"

#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

// "3 s", "2 min 5 s", "1 h 4 min": how long `ms` is, to the second.
std::string duration_text(Millis ms) {
  if (ms < 1000) return ms <= 0 ? "0 s" : "under 1 s";
  const Millis s = ms / 1000;
  if (s < 60) return std::to_string(s) + " s";
  if (s < 3600) {
    return std::to_string(s / 60) + " min" +
           (s % 60 != 0 ? " " + std::to_string(s % 60) + " s" : "");
  }
  return std::to_string(s / 3600) + " h" +
         (s % 3600 / 60 != 0 ? " " + std::to_string(s % 3600 / 60) + " min" : "");
}

// The delta's leaves: a dotted path for people, a JSON pointer to find it, and the value wanted.
struct Leaf {
  std::string path;
  json::json_pointer pointer;
  const json* wanted;
};
void leaves_of(const json& delta, const std::string& path, const json::json_pointer& at,
               std::vector<Leaf>& out) {
  for (const auto& [key, value] : delta.items()) {
    const std::string p = path.empty() ? key : path + "." + key;
    if (value.is_object() && !value.empty()) {
      leaves_of(value, p, at / key, out);
    } else {
      out.push_back({p, at / key, &value});
    }
  }
}

// When the device last reported the leaf at `pointer` (its compact metadata: ts or [ts, device
// ts]), if it ever did.
std::optional<Millis> reported_at(const Twin& twin, const json::json_pointer& pointer) {
  if (!twin.reported_meta.contains(pointer)) return std::nullopt;
  const json& m = twin.reported_meta.at(pointer);
  if (m.is_number_integer()) return m.get<Millis>();
  if (m.is_array() && !m.empty() && m[0].is_number_integer()) return m[0].get<Millis>();
  return std::nullopt;
}

json reason(std::string code, std::string text) {
  return json{{"code", std::move(code)}, {"text", std::move(text)}};
}

void device_error(const Twin& twin, json& reasons) {
  const auto& e = twin.last_error;
  // Old news once the device sent something the gateway accepted.
  if (!e || e->at < twin.last_seen.value_or(0)) return;
  json r = reason("device_error", "the gateway refused its message on " + e->topic + " at " +
                                      format_utc(e->at) + " (" + e->code + "): " + e->message);
  r["at"] = e->at;
  r["topic"] = e->topic;
  r["error"] = e->code;
  r["message"] = e->message;
  reasons.push_back(std::move(r));
}

void offline(const Twin& twin, json& reasons) {
  if (twin.connection == ConnectionState::kOnline) return;
  json r;
  if (twin.connection == ConnectionState::kOffline) {
    r = reason("offline", "offline since " + format_utc(twin.connection_since) +
                              "; the delta waits for it to reconnect");
    r["since"] = twin.connection_since;
  } else {
    r = reason("offline", "has not connected since it was created (" + format_utc(twin.created_at) +
                              "); the delta waits for its first connection");
    r["since"] = twin.created_at;
  }
  r["connection"] = to_string(twin.connection);
  reasons.push_back(std::move(r));
}

void not_applied(const Twin& twin, const std::vector<Leaf>& leaves, json& reasons) {
  if (!twin.reconcile_last_sent) return;
  const Millis sent = *twin.reconcile_last_sent;
  for (const Leaf& leaf : leaves) {
    if (!twin.reported.contains(leaf.pointer)) continue;
    const auto at = reported_at(twin, leaf.pointer);
    if (!at || *at <= sent) continue;
    const json& value = twin.reported.at(leaf.pointer);
    json r = reason("not_applied", "reported `" + leaf.path + "` = " + value.dump() + " at " +
                                       format_utc(*at) + ", " + duration_text(*at - sent) +
                                       " after the delta was sent: the device received it and "
                                       "did not apply it");
    r["field"] = leaf.path;
    r["reported"] = value;
    r["desired"] = *leaf.wanted;
    r["reported_at"] = *at;
    r["sent_at"] = sent;
    reasons.push_back(std::move(r));
  }
}

void reconcile(const Twin& twin, const Policy& policy, Millis now, json& reasons) {
  const uint32_t max = policy.reconcile_max_attempts;
  if (twin.reconcile == ReconcileState::kFailed) {
    json r = reason("failed", "failed after " + std::to_string(twin.reconcile_attempts) +
                                  " sends; a new desired change starts again");
    r["attempts"] = twin.reconcile_attempts;
    if (twin.reconcile_last_sent) r["last_sent"] = *twin.reconcile_last_sent;
    reasons.push_back(std::move(r));
    return;
  }
  if (twin.reconcile != ReconcileState::kPending || twin.reconcile_attempts == 0) return;
  std::string text =
      "sent " + std::to_string(twin.reconcile_attempts) + " of " + std::to_string(max) + " times";
  if (twin.reconcile_last_sent) text += ", last " + format_utc(*twin.reconcile_last_sent);
  if (twin.reconcile_next_retry) {
    text += ", next " + format_utc(*twin.reconcile_next_retry) + " (in " +
            duration_text(*twin.reconcile_next_retry - now) + ")";
  }
  json r = reason("retrying", std::move(text));
  r["attempts"] = twin.reconcile_attempts;
  r["max_attempts"] = max;
  if (twin.reconcile_last_sent) r["last_sent"] = *twin.reconcile_last_sent;
  if (twin.reconcile_next_retry) r["next_retry"] = *twin.reconcile_next_retry;
  reasons.push_back(std::move(r));
}

void stale(const Twin& twin, const TwinLogic& logic, Millis now, json& reasons) {
  if (twin.liveness != LivenessState::kStale) return;
  const Millis window = logic.stale_after_ms(twin);
  std::string text = twin.last_seen
                         ? "no message since " + format_utc(*twin.last_seen) + " (" +
                               duration_text(now - *twin.last_seen) + " ago)"
                         : "no message since it was created (" + format_utc(twin.created_at) + ")";
  text += "; it is stale after " + duration_text(window) + " without one";
  json r = reason("stale", std::move(text));
  if (twin.last_seen) r["last_seen"] = *twin.last_seen;
  r["stale_after_s"] = static_cast<double>(window) / 1000.0;
  reasons.push_back(std::move(r));
}

void commands(const Twin& twin, const Policy& policy, json& reasons) {
  json list = json::array();
  std::string text;
  size_t n = 0;
  for (const Command& c : twin.commands) {
    if (is_terminal(c.status)) continue;
    ++n;
    list.push_back({{"id", c.id},
                    {"name", c.name},
                    {"status", to_string(c.status)},
                    {"attempts", c.attempts}});
    if (n > 3) continue;  // the text names the first three
    text += std::string(text.empty() ? "" : "; ") + "'" + c.name + "' (" + c.id + ") ";
    if (c.status == CommandStatus::kQueued) {
      text += "queued since " + format_utc(c.created_at);
    } else {
      text += "sent " + std::to_string(c.attempts) + " of " +
              std::to_string(policy.command_max_attempts) + " times";
      if (c.ack_deadline) text += ", its result due by " + format_utc(*c.ack_deadline);
    }
  }
  if (n == 0) return;
  if (n > 3) text += "; and " + std::to_string(n - 3) + " more";
  json r = reason("command_pending",
                  std::to_string(n) + (n == 1 ? " command waits: " : " commands wait: ") + text);
  r["commands"] = std::move(list);
  reasons.push_back(std::move(r));
}

}  // namespace

std::string format_utc(Millis at) {
  const std::time_t t = static_cast<std::time_t>(at / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

json explain(const Twin& twin, const TwinLogic& logic, Millis now) {
  const json delta = compute_delta(twin.desired, twin.reported);
  std::vector<Leaf> leaves;
  leaves_of(delta, "", json::json_pointer(), leaves);
  json reasons = json::array();
  device_error(twin, reasons);
  if (!delta.empty()) {
    offline(twin, reasons);
    not_applied(twin, leaves, reasons);
    reconcile(twin, logic.policy(), now, reasons);
  }
  stale(twin, logic, now, reasons);
  commands(twin, logic.policy(), reasons);
  return json{{"converged", delta.empty()}, {"reasons", std::move(reasons)}};
}

}  // namespace doppel::twins
