// TwinLogic's liveness rules: a device that speaks is fresh and online; one silent past its
// staleness window goes stale (the alarm); a (re)connected one is owed its delta and commands.
#include "twins/twin_logic.h"

#include "twins/detail/twin_rules.h"

namespace doppel::twins {

using detail::mark;

Millis TwinLogic::stale_after_ms(const Twin& twin) const {
  if (twin.interval_s && *twin.interval_s > 0) return seconds_to_ms(3 * *twin.interval_s);
  if (twin.stale_after_s) return seconds_to_ms(*twin.stale_after_s);
  return seconds_to_ms(policy_.default_stale_after_s);
}

namespace {

// The device was seen now: fresh.
void seen(Twin& twin, Millis now, Outcome& out) {
  twin.last_seen = now;
  out.twin_changed = true;
  if (twin.liveness != LivenessState::kFresh) {
    if (twin.liveness == LivenessState::kStale) out.events.push_back(TwinEvent::kFresh);
    twin.liveness = LivenessState::kFresh;
    twin.liveness_since = now;
  }
}

}  // namespace

void TwinLogic::touch(Twin& twin, Millis now, Outcome& out) const {
  seen(twin, now, out);
  // A device that speaks is connected, even if its birth message was lost or never sent.
  if (twin.connection != ConnectionState::kOnline) {
    go_online(twin, now, out);
  } else if (twin.awaiting_first_message) {
    twin.awaiting_first_message = false;
    resume_deliveries(twin, now, out);
  }
}

void TwinLogic::on_connected(Twin& twin, Millis now, Outcome& out) const {
  seen(twin, now, out);
  if (twin.connection != ConnectionState::kOnline) {
    twin.connection = ConnectionState::kOnline;
    twin.connection_since = now;
    out.events.push_back(TwinEvent::kOnline);
  }
  twin.awaiting_first_message = true;
}

void TwinLogic::go_online(Twin& twin, Millis now, Outcome& out) const {
  twin.connection = ConnectionState::kOnline;
  twin.connection_since = now;
  out.twin_changed = true;
  out.events.push_back(TwinEvent::kOnline);
  twin.awaiting_first_message = false;
  resume_deliveries(twin, now, out);
}

void TwinLogic::resume_deliveries(Twin& twin, Millis now, Outcome& out) const {
  // A (re)connected device gets what it is owed at once: the delta and its pending commands.
  resume_reconcile(twin, now, out);
  for (auto& c : twin.commands) {
    if (c.status != CommandStatus::kSent) continue;
    if (c.expires_at && now >= *c.expires_at) continue;  // dispatch_commands expires it
    if (c.attempts < policy_.command_max_attempts) {
      deliver(twin, c, now, out);
    } else if (!c.ack_deadline) {
      c.ack_deadline = now + seconds_to_ms(policy_.command_ack_timeout_s);
      mark(out, c);
    }
  }
  dispatch_commands(twin, now, out);
}

void TwinLogic::liveness_alarm(Twin& twin, Millis now, Outcome& out) const {
  const Millis stale_at = twin.last_seen.value_or(twin.created_at) + stale_after_ms(twin);
  if (twin.liveness != LivenessState::kStale && now >= stale_at) {
    twin.liveness = LivenessState::kStale;
    twin.liveness_since = now;
    out.twin_changed = true;
    out.events.push_back(TwinEvent::kStale);
    out.fired.push_back(stale_at);
  }
}

}  // namespace doppel::twins
