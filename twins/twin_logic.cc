#include "twins/twin_logic.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

void mark(Outcome& out, const Command& c) {
  if (std::find(out.commands_changed.begin(), out.commands_changed.end(), c.seq) ==
      out.commands_changed.end()) {
    out.commands_changed.push_back(c.seq);
  }
}

// command.changed: a new status, or a re-delivery (status sent again, one more attempt).
void command_event(const Command& c, std::optional<CommandStatus> previous, Outcome& out) {
  out.changes.push_back({"command.changed",
                         {{"command_id", c.id},
                          {"name", c.name},
                          {"status", to_string(c.status)},
                          {"previous", previous ? json(to_string(*previous)) : json()},
                          {"attempts", c.attempts}}});
}

void set_status(Command& c, CommandStatus status, Millis now, Outcome& out, bool history) {
  const std::optional<CommandStatus> previous =
      c.history.empty() ? std::nullopt : std::optional<CommandStatus>(c.status);
  out.command_transitions.emplace_back(previous, status);
  c.status = status;
  c.history.push_back({status, now});
  if (history) command_event(c, previous, out);
}

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

std::string_view to_string(TwinEvent event) {
  switch (event) {
    case TwinEvent::kCreated:
      return "twin.created";
    case TwinEvent::kStale:
      return "twin.stale";
    case TwinEvent::kFresh:
      return "twin.fresh";
    case TwinEvent::kOnline:
      return "twin.online";
    case TwinEvent::kOffline:
      return "twin.offline";
    case TwinEvent::kConverged:
      return "twin.converged";
    case TwinEvent::kReconcileSent:
      return "twin.reconcile_sent";
    case TwinEvent::kReconcileFailed:
      return "twin.reconcile_failed";
    case TwinEvent::kCommandSent:
      return "command.sent";
    case TwinEvent::kCommandFinished:
      return "command.finished";
    case TwinEvent::kCommandExpired:
      return "command.expired";
    case TwinEvent::kCommandTimedOut:
      return "command.timed_out";
    case TwinEvent::kIgnoredCommandResult:
      return "command.result_ignored";
  }
  return "twin.event";
}

Twin TwinLogic::create(const std::string& id, Millis now, Outcome& out) const {
  Twin twin;
  twin.id = id;
  twin.created_at = now;
  twin.updated_at = now;
  out.twin_changed = true;
  out.events.push_back(TwinEvent::kCreated);
  if (policy_.history) out.changes.push_back({"twin.created", json::object()});
  return twin;
}

Millis TwinLogic::backoff_ms(double base_s, uint32_t attempts) const {
  double s = base_s;
  for (uint32_t i = 1; i < attempts && s < policy_.retry_backoff_cap_s; ++i) s *= 2;
  return seconds_to_ms(std::min(s, std::max(base_s, policy_.retry_backoff_cap_s)));
}

Millis TwinLogic::stale_after_ms(const Twin& twin) const {
  if (twin.interval_s && *twin.interval_s > 0) return seconds_to_ms(3 * *twin.interval_s);
  if (twin.stale_after_s) return seconds_to_ms(*twin.stale_after_s);
  return seconds_to_ms(policy_.default_stale_after_s);
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

void TwinLogic::touch(Twin& twin, Millis now, Outcome& out) const {
  twin.last_seen = now;
  out.twin_changed = true;
  if (twin.liveness != LivenessState::kFresh) {
    if (twin.liveness == LivenessState::kStale) out.events.push_back(TwinEvent::kFresh);
    twin.liveness = LivenessState::kFresh;
    twin.liveness_since = now;
  }
  // A device that speaks is connected, even if its birth message was lost or never sent.
  if (twin.connection != ConnectionState::kOnline) go_online(twin, now, out);
}

void TwinLogic::go_online(Twin& twin, Millis now, Outcome& out) const {
  twin.connection = ConnectionState::kOnline;
  twin.connection_since = now;
  out.twin_changed = true;
  out.events.push_back(TwinEvent::kOnline);
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

Status TwinLogic::on_reported(Twin& twin, const ReportedMessage& msg, Millis now,
                              Outcome& out) const {
  if (Status s = check_state_document(msg.state, policy_.limits, "reported state", false); !s)
    return s;
  auto bytes =
      check_merged_size(twin.reported, twin.reported_bytes, msg.state, false, "reported state");
  if (!bytes) return bytes.status();
  twin.reported_bytes = *bytes;
  const json leaf = msg.device_ts ? json::array({now, *msg.device_ts}) : json(now);
  json changed = policy_.history ? changed_leaves(twin.reported, msg.state) : json();
  if (apply_merge_patch(twin.reported, twin.reported_meta, msg.state, leaf)) {
    ++twin.reported_version;
    ++twin.version;
    if (policy_.history) {
      out.changes.push_back(
          {"reported.updated",
           {{"reported_version", twin.reported_version}, {"patch", std::move(changed)}}});
    }
  }
  twin.updated_at = now;
  out.twin_changed = true;
  const bool was_online = twin.connection == ConnectionState::kOnline;
  touch(twin, now, out);
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

void TwinLogic::on_get(Twin& twin, const GetMessage& msg, Millis now, Outcome& out) const {
  touch(twin, now, out);
  out.outputs.push_back(TwinOut{device_twin_document(twin), msg.token});
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
  prune_history(twin, out);
}

void TwinLogic::on_alarm(Twin& twin, Millis now, Outcome& out) const {
  const Millis stale_at = twin.last_seen.value_or(twin.created_at) + stale_after_ms(twin);
  if (twin.liveness != LivenessState::kStale && now >= stale_at) {
    twin.liveness = LivenessState::kStale;
    twin.liveness_since = now;
    out.twin_changed = true;
    out.events.push_back(TwinEvent::kStale);
    out.fired.push_back(stale_at);
  }
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
  for (auto& c : twin.commands) {
    if (is_terminal(c.status)) continue;
    if (c.expires_at && now >= *c.expires_at) {
      out.fired.push_back(*c.expires_at);
      c.error = std::string("ttl passed while ") + std::string(to_string(c.status));
      finish(twin, c, CommandStatus::kExpired, now, out);
      out.events.push_back(TwinEvent::kCommandExpired);
    } else if (c.status == CommandStatus::kSent && c.ack_deadline && now >= *c.ack_deadline) {
      out.fired.push_back(*c.ack_deadline);
      if (twin.connection != ConnectionState::kOnline) {
        c.ack_deadline.reset();  // re-delivered by the birth message
        mark(out, c);
      } else if (c.attempts >= policy_.command_max_attempts) {
        c.error = "no result after " + std::to_string(c.attempts) + " deliveries";
        finish(twin, c, CommandStatus::kTimedOut, now, out);
        out.events.push_back(TwinEvent::kCommandTimedOut);
      } else {
        deliver(twin, c, now, out);
      }
    }
  }
  dispatch_commands(twin, now, out);
  prune_history(twin, out);
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
  if (policy_.history && !patch.empty()) {
    out.changes.push_back(
        {"settings.updated", {{"patch", std::move(patch)}, {"replace", !is_patch}}});
  }
  if (out.twin_changed) twin.updated_at = now;
  return Status::ok();
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
  if (policy_.history) {
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
  out.outputs.push_back(DeltaOut{twin.desired_version, delta});
  out.events.push_back(TwinEvent::kReconcileSent);
}

Result<const Command*> TwinLogic::enqueue(Twin& twin, const CommandRequest& request, Millis now,
                                          Outcome& out) const {
  if (!request.idempotency_key.empty()) {
    for (const auto& c : twin.commands) {
      if (c.idempotency_key == request.idempotency_key) return &c;
    }
  }
  if (unfinished_commands(twin) >= policy_.command_queue_max) {
    return Status(StatusCode::kQueueFull,
                  "the command queue of '" + twin.id + "' holds " +
                      std::to_string(policy_.command_queue_max) +
                      " unfinished commands, its limit; wait for them to finish or cancel some");
  }
  Command c;
  c.id = command_ids_();
  c.seq = twin.next_command_seq++;
  c.name = request.name;
  c.args = request.args;
  c.idempotency_key = request.idempotency_key;
  c.created_at = now;
  if (request.ttl_s) c.expires_at = now + seconds_to_ms(*request.ttl_s);
  set_status(c, CommandStatus::kQueued, now, out, policy_.history);
  twin.commands.push_back(std::move(c));
  const uint64_t seq = twin.commands.back().seq;
  mark(out, twin.commands.back());
  twin.updated_at = now;
  out.twin_changed = true;
  dispatch_commands(twin, now, out);
  prune_history(twin, out);
  for (const auto& cmd : twin.commands) {
    if (cmd.seq == seq) return &cmd;
  }
  return Status(StatusCode::kInternal, "enqueued command vanished");
}

Result<json> TwinLogic::cancel(Twin& twin, std::string_view command_id, Millis now,
                               Outcome& out) const {
  Command* c = find_command(twin, command_id);
  if (c == nullptr) {
    return Status(StatusCode::kNotFound,
                  "twin '" + twin.id + "' has no command '" + std::string(command_id) + "'");
  }
  if (is_terminal(c->status)) {
    return Status(StatusCode::kConflict, "command '" + c->id + "' already finished as " +
                                             std::string(to_string(c->status)));
  }
  c->error = "cancelled by operator";
  finish(twin, *c, CommandStatus::kCancelled, now, out);
  json cancelled = command_document(*c);
  dispatch_commands(twin, now, out);  // may move `twin.commands`: `c` is not used after this
  prune_history(twin, out);
  return cancelled;
}

void TwinLogic::dispatch_commands(Twin& twin, Millis now, Outcome& out) const {
  for (auto& c : twin.commands) {
    if (c.status == CommandStatus::kQueued && c.expires_at && now >= *c.expires_at) {
      c.error = "ttl passed while queued";
      finish(twin, c, CommandStatus::kExpired, now, out);
      out.events.push_back(TwinEvent::kCommandExpired);
    }
  }
  if (twin.connection != ConnectionState::kOnline) return;
  if (twin.command_strategy == CommandStrategy::kSequential) {
    for (const auto& c : twin.commands) {
      if (c.status == CommandStatus::kSent) return;  // one in flight
    }
  }
  for (auto& c : twin.commands) {
    if (c.status != CommandStatus::kQueued) continue;
    deliver(twin, c, now, out);
    if (twin.command_strategy == CommandStrategy::kSequential) return;
  }
}

void TwinLogic::deliver(Twin& twin, Command& c, Millis now, Outcome& out) const {
  ++c.attempts;
  if (c.status != CommandStatus::kSent) {
    set_status(c, CommandStatus::kSent, now, out, policy_.history);
  } else if (policy_.history) {
    command_event(c, CommandStatus::kSent, out);  // a re-delivery
  }
  c.ack_deadline = now + backoff_ms(policy_.command_ack_timeout_s, c.attempts);
  mark(out, c);
  twin.updated_at = now;
  out.twin_changed = true;
  out.outputs.push_back(CommandOut{c.id, c.name, c.args, c.expires_at});
  out.events.push_back(TwinEvent::kCommandSent);
}

void TwinLogic::finish(Twin& twin, Command& c, CommandStatus status, Millis now,
                       Outcome& out) const {
  set_status(c, status, now, out, policy_.history);
  c.ack_deadline.reset();
  mark(out, c);
  twin.updated_at = now;
  out.twin_changed = true;
}

void TwinLogic::prune_history(Twin& twin, Outcome& out) const {
  size_t finished = 0;
  for (const auto& c : twin.commands) finished += is_terminal(c.status) ? 1 : 0;
  if (finished <= policy_.command_history) return;
  size_t drop = finished - policy_.command_history;
  auto& cmds = twin.commands;
  for (auto it = cmds.begin(); it != cmds.end() && drop > 0;) {
    if (is_terminal(it->status)) {
      out.commands_removed.push_back(it->seq);
      auto& changed = out.commands_changed;
      changed.erase(std::remove(changed.begin(), changed.end(), it->seq), changed.end());
      it = cmds.erase(it);
      --drop;
    } else {
      ++it;
    }
  }
}

void TwinLogic::run_job(Twin& twin, const JobSpec& spec, Millis now, Outcome& out) const {
  for (const JobRun& r : twin.jobs) {
    if (r.job == spec.id) return;  // already running it: the action is applied once
  }
  ExecutionRecord exec{spec.id, twin.id, ExecStatus::kInProgress, 1, now, {}};
  JobRun run;
  run.job = spec.id;
  run.retries = spec.retries;
  run.deadline = now + seconds_to_ms(spec.timeout_s);
  if (spec.desired) {
    const UpdateDesired patch{*spec.desired, false, std::nullopt};
    if (Status s = update_desired(twin, patch, now, out); !s) {
      exec.status = ExecStatus::kFailed;
      exec.detail = s.message();
      out.job_updates.push_back(std::move(exec));
      return;
    }
    run.desired_version = twin.desired_version;
  } else if (spec.command) {
    CommandRequest request = *spec.command;
    request.idempotency_key = job_command_key(spec.id, 1);
    auto cmd = enqueue(twin, request, now, out);
    if (!cmd) {
      exec.status = ExecStatus::kFailed;
      exec.detail = cmd.status().message();
      out.job_updates.push_back(std::move(exec));
      return;
    }
    run.is_command = true;
    run.command_name = spec.command->name;
    run.command_args = spec.command->args;
    run.command_ttl_s = spec.command->ttl_s;
    run.command_id = (*cmd)->id;
  }
  twin.jobs.push_back(std::move(run));
  out.job_updates.push_back(std::move(exec));
  out.twin_changed = true;
}

void TwinLogic::settle_jobs(Twin& twin, Millis now, Outcome& out) const {
  for (size_t i = 0; i < twin.jobs.size();) {
    JobRun& run = twin.jobs[i];
    std::optional<ExecStatus> end;
    std::string detail;
    if (!run.is_command) {
      if (twin.desired_version > run.desired_version && !run.superseded) {
        run.superseded = true;
        out.twin_changed = true;
      }
      const bool reached = twin.reconcile_desired_version >= run.desired_version;
      if (reached && twin.reconcile == ReconcileState::kConverged) {
        end = ExecStatus::kSucceeded;
        if (run.superseded) {
          detail = "superseded by desired version " + std::to_string(twin.desired_version) +
                   ", on which the twin converged";
        }
      } else if (reached && twin.reconcile == ReconcileState::kFailed) {
        end = ExecStatus::kFailed;
        detail =
            "reconciliation failed after " + std::to_string(twin.reconcile_attempts) + " attempts";
      }
    } else {
      const Command* c = find_command(twin, run.command_id);
      if (c == nullptr) {
        end = ExecStatus::kFailed;
        detail = "command " + run.command_id + " is no longer kept";
      } else if (c->status == CommandStatus::kSucceeded) {
        end = ExecStatus::kSucceeded;
      } else if (is_terminal(c->status)) {
        detail = "command " + std::string(to_string(c->status)) +
                 (c->error.empty() ? std::string() : ": " + c->error);
        if (run.attempts <= run.retries) {
          CommandRequest request{run.command_name, run.command_args, run.command_ttl_s,
                                 job_command_key(run.job, run.attempts + 1)};
          auto cmd = enqueue(twin, request, now, out);  // may move twin.commands, not twin.jobs
          if (cmd) {
            ++run.attempts;
            run.command_id = (*cmd)->id;
            out.twin_changed = true;
            out.job_updates.push_back({run.job, twin.id, ExecStatus::kInProgress, run.attempts, now,
                                       "retry after " + detail});
          } else {
            end = ExecStatus::kFailed;
            detail += "; the retry was refused: " + cmd.status().message();
          }
        } else {
          end = ExecStatus::kFailed;
        }
      }
    }
    if (!end && now >= run.deadline) {
      end = ExecStatus::kTimedOut;
      detail = "no outcome within the job's timeout_s of its dispatch";
    }
    if (!end) {
      ++i;
      continue;
    }
    out.job_updates.push_back({run.job, twin.id, *end, run.attempts, now, std::move(detail)});
    twin.jobs.erase(twin.jobs.begin() + static_cast<std::ptrdiff_t>(i));
    out.twin_changed = true;
  }
}

void TwinLogic::abandon_jobs(Twin& twin, Millis now, std::string_view why,
                             std::vector<ExecutionRecord>& out) {
  for (const JobRun& run : twin.jobs) {
    out.push_back({run.job, twin.id, ExecStatus::kFailed, run.attempts, now, std::string(why)});
  }
  twin.jobs.clear();
}

}  // namespace doppel::twins
