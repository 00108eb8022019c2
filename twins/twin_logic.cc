// TwinLogic (twin_logic.h), its core: creating a twin, the device messages and operator requests
// that change its documents, the earliest deadline, and the alarm that fires the due ones. The
// rules of each concern live beside it: liveness.cc (fresh, stale, online), reconcile.cc (the
// delta until the device converges), command_queue.cc (commands), job_runs.cc (job executions,
// on top of the others).
#include "twins/twin_logic.h"

#include "twins/closed_set.h"
#include "twins/detail/twin_rules.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "twins/aws_shadow.h"
#include "twins/merge_patch.h"

namespace doppel::twins {

using detail::mark;

namespace {

void earliest(std::optional<Millis>& acc, std::optional<Millis> v) {
  if (v && (!acc || *v < *acc)) acc = v;
}

}  // namespace

IdGenerator random_command_ids() {
  return [] {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    return std::string(buf);
  };
}

namespace {

// The milestones' names, which metrics label them by (doppel_twin_events_total{event=...}). One
// vocabulary with the change feed's kinds (events.h): the one name both use, twin.created, names
// the same moment (create() emits both); every other milestone is a finer step than any feed kind
// (twin.stale and twin.fresh are both liveness.changed; command.sent, .finished, .expired and
// .timed_out are command.changed) and has a name no feed kind has.
constexpr NameTable<TwinEvent, kTwinEventCount> kTwinEventNames{
    {"twin.created", "twin.stale", "twin.fresh", "twin.online", "twin.offline", "twin.converged",
     "twin.reconcile_sent", "twin.reconcile_failed", "command.sent", "command.finished",
     "command.expired", "command.timed_out", "command.result_ignored"}};
static_assert(kTwinEventNames.covers(TwinEvent::kIgnoredCommandResult));

}  // namespace

std::string_view to_string(TwinEvent event) { return kTwinEventNames.name(event); }

Twin TwinLogic::create(const std::string& id, Millis now, Outcome& out) const {
  Twin twin;
  twin.id = id;
  twin.created_at = now;
  twin.updated_at = now;
  out.twin_changed = true;
  out.events.push_back(TwinEvent::kCreated);
  if (policy_.record_changes) out.changes.push_back({"twin.created", json::object()});
  return twin;
}

std::optional<Millis> TwinLogic::next_deadline(const Twin& twin) const {
  std::optional<Millis> due;
  if (twin.liveness != LivenessState::kStale) {
    earliest(due, twin.last_seen.value_or(twin.created_at) + stale_after_ms(twin));
  }
  if (twin.reconcile == ReconcileState::kPending) earliest(due, twin.reconcile_next_retry);
  for (const auto& c : twin.commands) {
    if (is_terminal(c.status)) continue;
    earliest(due, c.expires_at);
    if (c.status == CommandStatus::kSent) earliest(due, c.ack_deadline);
  }
  for (const auto& run : twin.jobs) earliest(due, run.deadline);
  return due;
}

Result<size_t> TwinLogic::check_merged_size(const json& current, size_t current_bytes,
                                            const json& patch, bool replace,
                                            std::string_view what) const {
  // A merge never yields more than the old document plus the patch, so the cheap bound decides
  // most updates; only near the limit is the merged document built and measured.
  const size_t patch_bytes = to_text(patch).size();
  const size_t bound = replace ? patch_bytes : current_bytes + patch_bytes;
  if (bound <= policy_.limits.max_document_bytes) return bound;
  json merged = replace ? json::object() : current;
  apply_merge_patch(merged, patch);
  const size_t bytes = to_text(merged).size();
  if (bytes <= policy_.limits.max_document_bytes) return bytes;
  return Status(StatusCode::kTooLarge, std::string(what) + " would be " + std::to_string(bytes) +
                                           " bytes serialized after this update; the limit is " +
                                           std::to_string(policy_.limits.max_document_bytes) +
                                           " bytes");
}

namespace {

Status version_conflict(const Twin& twin, std::optional<uint64_t> expected) {
  if (!expected || *expected == twin.version) return Status::ok();
  return Status(StatusCode::kConflict, "Version conflict: the request names version " +
                                           std::to_string(*expected) + " but the shadow is at " +
                                           std::to_string(twin.version));
}

}  // namespace

Status TwinLogic::on_reported(Twin& twin, const ReportedMessage& msg, Millis now,
                              Outcome& out) const {
  if (Status s = version_conflict(twin, msg.expected_version); !s) return s;
  if (Status s = check_state_document(msg.state, policy_.limits, "reported state", false); !s)
    return s;
  auto bytes =
      check_merged_size(twin.reported, twin.reported_bytes, msg.state, false, "reported state");
  if (!bytes) return bytes.status();
  std::optional<json> previous;  // AWS dialect: update/documents' `previous`
  if (twin.dialect == Dialect::kAws && policy_.aws_documents) previous = shadow_state(twin);
  if (msg.desired) {
    // A device's own desired patch (AWS dialect), checked before anything changes.
    if (Status s = check_state_document(*msg.desired, policy_.limits, "desired state", false); !s)
      return s;
    if (Status s = update_desired(twin, UpdateDesired{*msg.desired, false, std::nullopt}, now, out);
        !s)
      return s;
  }
  twin.reported_bytes = *bytes;
  const json leaf = msg.device_ts ? json::array({now, *msg.device_ts}) : json(now);
  json changed = policy_.record_changes ? changed_leaves(twin.reported, msg.state) : json();
  if (apply_merge_patch(twin.reported, twin.reported_meta, msg.state, leaf)) {
    ++twin.reported_version;
    ++twin.version;
    if (policy_.record_changes) {
      out.changes.push_back(
          {"reported.updated",
           {{"reported_version", twin.reported_version}, {"patch", std::move(changed)}}});
    }
  }
  twin.updated_at = now;
  out.twin_changed = true;
  const bool was_online = twin.connection == ConnectionState::kOnline;
  touch(twin, now, out);
  if (twin.dialect == Dialect::kAws) {
    out.outputs.push_back(
        ShadowReply{ShadowOp::kUpdate,
                    json(),
                    {},
                    shadow_update_accepted(twin, msg.desired, msg.state, now, msg.token)});
  }
  if (previous) {
    out.outputs.push_back(ShadowReply{
        ShadowOp::kDocuments, shadow_documents(std::move(*previous), twin, now, msg.token), {}});
  }
  if (!was_online) return Status::ok();  // go_online already (re)started reconciliation

  const bool converged = delta_is_empty(twin.desired, twin.reported);
  if (converged && twin.reconcile != ReconcileState::kConverged) {
    twin.reconcile = ReconcileState::kConverged;
    twin.reconcile_attempts = 0;
    twin.reconcile_next_retry.reset();
    out.events.push_back(TwinEvent::kConverged);
  } else if (!converged && twin.reconcile == ReconcileState::kConverged) {
    // The device drifted away from desired on its own: reconcile it again.
    start_reconcile(twin, now, out);
  }
  return Status::ok();
}

Status TwinLogic::on_get(Twin& twin, const GetMessage& msg, Millis now, Outcome& out) const {
  touch(twin, now, out);
  if (twin.dialect != Dialect::kAws) {
    out.outputs.push_back(TwinOut{device_twin_document(twin), msg.token});
    return Status::ok();
  }
  if (!has_shadow(twin)) return no_shadow(twin);
  out.outputs.push_back(ShadowReply{ShadowOp::kGet, shadow_get_accepted(twin, now, msg.token), {}});
  // AWS firmware gets its shadow when it (re)connects, and sends no birth: the get is how the
  // twin learns it is back, so a pending delta is sent again now rather than at the next retry.
  if (twin.reconcile == ReconcileState::kPending) resume_reconcile(twin, now, out);
  return Status::ok();
}

Status TwinLogic::no_shadow(const Twin& twin) {
  return Status(StatusCode::kNotFound, "No shadow exists with name: '" + twin.id + "'");
}

Status TwinLogic::on_delete(Twin& twin, const DeleteMessage& msg, Millis now, Outcome& out) const {
  if (!has_shadow(twin)) return no_shadow(twin);
  if (Status s = version_conflict(twin, msg.expected_version); !s) return s;
  // Desired goes as an operator's replacement would (its version bumps, reconciliation ends
  // converged on the empty state); reported is cleared key by key, a patch the feed and history
  // replay like any report.
  if (Status s = update_desired(twin, UpdateDesired{json::object(), true, std::nullopt}, now, out);
      !s)
    return s;
  if (!twin.reported.empty()) {
    json patch = json::object();
    for (const auto& [key, value] : twin.reported.items()) patch[key] = nullptr;
    twin.reported = json::object();
    twin.reported_meta = json::object();
    twin.reported_bytes = 2;
    ++twin.reported_version;
    ++twin.version;
    if (policy_.record_changes) {
      out.changes.push_back(
          {"reported.updated",
           {{"reported_version", twin.reported_version}, {"patch", std::move(patch)}}});
    }
  }
  twin.updated_at = now;
  out.twin_changed = true;
  touch(twin, now, out);
  out.outputs.push_back(
      ShadowReply{ShadowOp::kDelete, shadow_delete_accepted(twin, now, msg.token), {}});
  return Status::ok();
}

void TwinLogic::on_status(Twin& twin, const StatusMessage& msg, Encoding arrived_as, Millis now,
                          Outcome& out) const {
  out.twin_changed = true;
  if (!msg.online) {
    if (twin.connection != ConnectionState::kOffline) {
      twin.connection = ConnectionState::kOffline;
      twin.connection_since = now;
      out.events.push_back(TwinEvent::kOffline);
    }
    return;
  }
  twin.interval_s = msg.interval_s;
  twin.encoding = msg.encoding.value_or(arrived_as);
  twin.last_seen = now;
  if (twin.liveness == LivenessState::kStale) out.events.push_back(TwinEvent::kFresh);
  if (twin.liveness != LivenessState::kFresh) twin.liveness_since = now;
  twin.liveness = LivenessState::kFresh;
  // A birth always re-sends: the device may have lost what we sent before it reconnected.
  go_online(twin, now, out);
}

void TwinLogic::on_command_result(Twin& twin, std::string_view command_id,
                                  const CommandResultMessage& msg, Millis now, Outcome& out) const {
  touch(twin, now, out);
  Command* c = find_command(twin, command_id);
  if (c == nullptr || c->status != CommandStatus::kSent) {
    out.events.push_back(TwinEvent::kIgnoredCommandResult);
    return;
  }
  if (msg.status == ResultStatus::kInProgress) {
    c->ack_deadline = now + seconds_to_ms(policy_.command_ack_timeout_s);
    mark(out, *c);
    return;
  }
  c->result = msg.result;
  c->error = msg.error;
  const CommandStatus status = msg.status == ResultStatus::kSucceeded ? CommandStatus::kSucceeded
                               : msg.status == ResultStatus::kFailed  ? CommandStatus::kFailed
                                                                      : CommandStatus::kRejected;
  finish(twin, *c, status, now, out);
  out.events.push_back(TwinEvent::kCommandFinished);
  dispatch_commands(twin, now, out);
  drop_old_finished_commands(twin, out);
}

void TwinLogic::on_alarm(Twin& twin, Millis now, Outcome& out) const {
  liveness_alarm(twin, now, out);
  reconcile_alarm(twin, now, out);
  command_alarms(twin, now, out);
}

Status TwinLogic::apply_settings(Twin& twin, const TwinSettings& s, bool is_patch, Millis now,
                                 Outcome& out) const {
  // Validate everything before changing anything: a rejected request changes nothing.
  std::optional<json> tags;
  if (s.tags.present) {
    tags = is_patch ? twin.tags : json::object();
    if (s.tags.value) apply_merge_patch(*tags, *s.tags.value);
    if (Status st = check_state_document(*tags, policy_.limits, "tags"); !st) return st;
  }
  if (s.desired) {
    UpdateDesired replace{*s.desired, true, std::nullopt};
    if (Status st = update_desired(twin, replace, now, out); !st) return st;
  }
  json patch = json::object();  // settings.updated: what this request set
  if (tags && !values_equal(*tags, twin.tags)) {
    patch["tags"] = is_patch ? s.tags.value.value_or(json()) : *tags;
    twin.tags = std::move(*tags);
    out.twin_changed = true;
  } else if (tags) {
    out.twin_changed = true;
  }
  if (s.stale_after_s.present) {
    if (twin.stale_after_s != s.stale_after_s.value) {
      patch["stale_after_s"] = s.stale_after_s.value ? json(*s.stale_after_s.value) : json();
    }
    twin.stale_after_s = s.stale_after_s.value;
    out.twin_changed = true;
  }
  if (s.command_strategy && *s.command_strategy != twin.command_strategy) {
    twin.command_strategy = *s.command_strategy;
    patch["command_strategy"] = to_string(twin.command_strategy);
    out.twin_changed = true;
    dispatch_commands(twin, now, out);
  }
  if (policy_.record_changes && !patch.empty()) {
    out.changes.push_back(
        {"settings.updated", {{"patch", std::move(patch)}, {"replace", !is_patch}}});
  }
  if (out.twin_changed) twin.updated_at = now;
  return Status::ok();
}

void TwinLogic::record_credentials(const std::vector<CredentialChange>& changes,
                                   Outcome& out) const {
  if (!policy_.record_changes) return;
  for (const CredentialChange& c : changes) {
    json fields = {{"credential", c.credential}, {"action", c.action}};
    if (!c.serial.empty()) fields["serial"] = c.serial;
    if (c.action == "revoked") fields["count"] = c.count;
    out.changes.push_back({"credentials.changed", std::move(fields)});
  }
}

Status TwinLogic::update_desired(Twin& twin, const UpdateDesired& request, Millis now,
                                 Outcome& out) const {
  if (request.if_match && *request.if_match != twin.desired_version) {
    return Status(StatusCode::kPreconditionFailed,
                  "If-Match names desired version " + std::to_string(*request.if_match) +
                      " but the current desired version is " +
                      std::to_string(twin.desired_version) + "; GET the twin and retry");
  }
  const char* what = request.replace ? "desired state" : "desired patch";
  if (Status s = check_state_document(request.document, policy_.limits, what, false); !s) return s;
  auto bytes = check_merged_size(twin.desired, twin.desired_bytes, request.document,
                                 request.replace, "desired state");
  if (!bytes) return bytes.status();
  json next = request.replace ? json::object() : twin.desired;
  apply_merge_patch(next, request.document);
  if (values_equal(next, twin.desired)) return Status::ok();  // nothing to change

  twin.desired_bytes = *bytes;
  const uint64_t version = twin.desired_version + 1;
  const json leaf = {{"ts", now}, {"version", version}};
  if (request.replace) {
    twin.desired = json::object();
    twin.desired_meta = json::object();
  }
  apply_merge_patch(twin.desired, twin.desired_meta, request.document, leaf);
  twin.desired_version = version;
  ++twin.version;
  if (policy_.record_changes) {
    json fields = {{"desired_version", version}};
    if (request.replace) {
      fields["replace"] = true;
      fields["desired"] = twin.desired;
    } else {
      fields["patch"] = request.document;
    }
    out.changes.push_back({"desired.updated", std::move(fields)});
  }
  twin.updated_at = now;
  out.twin_changed = true;
  start_reconcile(twin, now, out);
  return Status::ok();
}

}  // namespace doppel::twins
