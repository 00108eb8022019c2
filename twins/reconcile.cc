// TwinLogic's reconcile rules: a new desired version (or drift after convergence) starts a cycle
// that sends the delta, retries with backoff while the device is online, and ends converged or
// failed after the attempts allowed.
#include "twins/twin_logic.h"

#include "twins/aws_shadow.h"

#include <algorithm>

#include "twins/merge_patch.h"

namespace doppel::twins {

Millis TwinLogic::backoff_ms(double base_s, uint32_t attempts) const {
  double s = base_s;
  for (uint32_t i = 1; i < attempts && s < policy_.retry_backoff_cap_s; ++i) s *= 2;
  return seconds_to_ms(std::min(s, std::max(base_s, policy_.retry_backoff_cap_s)));
}

void TwinLogic::start_reconcile(Twin& twin, Millis now, Outcome& out) const {
  const json delta = compute_delta(twin.desired, twin.reported);
  out.twin_changed = true;
  twin.reconcile_attempts = 0;
  twin.reconcile_next_retry.reset();
  twin.reconcile_desired_version = twin.desired_version;
  if (delta.empty()) {
    if (twin.reconcile != ReconcileState::kConverged) out.events.push_back(TwinEvent::kConverged);
    twin.reconcile = ReconcileState::kConverged;
    return;
  }
  twin.reconcile = ReconcileState::kPending;
  if (twin.connection == ConnectionState::kOnline) send_delta(twin, delta, now, out);
}

void TwinLogic::resume_reconcile(Twin& twin, Millis now, Outcome& out) const {
  const bool same_cycle = twin.reconcile_desired_version == twin.desired_version &&
                          twin.reconcile != ReconcileState::kConverged;
  if (!same_cycle) return start_reconcile(twin, now, out);
  const json delta = compute_delta(twin.desired, twin.reported);
  out.twin_changed = true;
  if (delta.empty()) {
    twin.reconcile = ReconcileState::kConverged;
    twin.reconcile_attempts = 0;
    twin.reconcile_next_retry.reset();
    out.events.push_back(TwinEvent::kConverged);
    return;
  }
  if (twin.reconcile == ReconcileState::kFailed) return;  // only a new desired change revives it
  if (twin.reconcile_attempts >= policy_.reconcile_max_attempts) {
    twin.reconcile = ReconcileState::kFailed;
    twin.reconcile_next_retry.reset();
    out.events.push_back(TwinEvent::kReconcileFailed);
    return;
  }
  if (twin.connection == ConnectionState::kOnline) send_delta(twin, delta, now, out);
}

void TwinLogic::send_delta(Twin& twin, const json& delta, Millis now, Outcome& out) const {
  ++twin.reconcile_attempts;
  twin.reconcile_last_sent = now;
  twin.reconcile_next_retry =
      now + backoff_ms(policy_.reconcile_timeout_s, twin.reconcile_attempts);
  out.twin_changed = true;
  DeltaOut msg;
  msg.version = twin.desired_version;
  msg.state = delta;
  if (twin.dialect == Dialect::kAws) {
    msg.document_version = twin.version;
    msg.metadata = delta_metadata(delta, twin.desired_meta);
    msg.at = now;
  }
  out.outputs.push_back(std::move(msg));
  out.events.push_back(TwinEvent::kReconcileSent);
}

void TwinLogic::reconcile_alarm(Twin& twin, Millis now, Outcome& out) const {
  if (twin.reconcile == ReconcileState::kPending && twin.reconcile_next_retry &&
      now >= *twin.reconcile_next_retry) {
    out.fired.push_back(*twin.reconcile_next_retry);
    out.twin_changed = true;
    const json delta = compute_delta(twin.desired, twin.reported);
    if (delta.empty()) {
      twin.reconcile = ReconcileState::kConverged;
      twin.reconcile_attempts = 0;
      twin.reconcile_next_retry.reset();
      out.events.push_back(TwinEvent::kConverged);
    } else if (twin.connection != ConnectionState::kOnline) {
      twin.reconcile_next_retry.reset();  // the birth message re-sends
    } else if (twin.reconcile_attempts >= policy_.reconcile_max_attempts) {
      twin.reconcile = ReconcileState::kFailed;
      twin.reconcile_next_retry.reset();
      out.events.push_back(TwinEvent::kReconcileFailed);
    } else {
      send_delta(twin, delta, now, out);
    }
  }
}

}  // namespace doppel::twins
