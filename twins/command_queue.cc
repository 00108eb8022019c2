// TwinLogic's command queue: enqueue (idempotency keys), cancel, dispatch by the twin's strategy,
// delivery and re-delivery, the end of a command (its result, TTL or ack timeout: the alarm), and
// how many finished commands are kept.
#include "twins/twin_logic.h"

#include <algorithm>

#include "twins/aws_shadow.h"
#include "twins/detail/twin_rules.h"

namespace doppel::twins {

namespace {

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

}  // namespace

namespace detail {

void mark(Outcome& out, const Command& c) {
  if (std::find(out.commands_changed.begin(), out.commands_changed.end(), c.seq) ==
      out.commands_changed.end()) {
    out.commands_changed.push_back(c.seq);
  }
}

}  // namespace detail

using detail::mark;

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
  set_status(c, CommandStatus::kQueued, now, out, policy_.record_changes);
  twin.commands.push_back(std::move(c));
  const uint64_t seq = twin.commands.back().seq;
  mark(out, twin.commands.back());
  twin.updated_at = now;
  out.twin_changed = true;
  dispatch_commands(twin, now, out);
  drop_old_finished_commands(twin, out);
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
  drop_old_finished_commands(twin, out);
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
    set_status(c, CommandStatus::kSent, now, out, policy_.record_changes);
  } else if (policy_.record_changes) {
    command_event(c, CommandStatus::kSent, out);  // a re-delivery
  }
  c.ack_deadline = now + backoff_ms(policy_.command_ack_timeout_s, c.attempts);
  mark(out, c);
  twin.updated_at = now;
  out.twin_changed = true;
  if (twin.dialect == Dialect::kAws) {
    // AWS IoT Jobs: the device hears of its next execution on notify-next.
    out.outputs.push_back(
        ShadowReply{ShadowOp::kUpdate,
                    {{"timestamp", aws_seconds(now)}, {"execution", job_execution(twin, c, true)}},
                    "notify-next"});
  } else {
    out.outputs.push_back(CommandOut{c.id, c.name, c.args, c.expires_at});
  }
  out.events.push_back(TwinEvent::kCommandSent);
}

namespace {

// The execution a device works on next: the first sent, else the first queued (by seq).
Command* next_pending(Twin& twin) {
  Command* queued = nullptr;
  for (auto& c : twin.commands) {
    if (c.status == CommandStatus::kSent) return &c;
    if (c.status == CommandStatus::kQueued && queued == nullptr) queued = &c;
  }
  return queued;
}

void with_token(json& body, const std::string& token) {
  if (!token.empty()) body["clientToken"] = token;
}

}  // namespace

Status TwinLogic::on_jobs_query(Twin& twin, std::string_view target, const JobsQueryMessage& msg,
                                Millis now, Outcome& out) const {
  touch(twin, now, out);
  json body = {{"timestamp", aws_seconds(now)}};
  with_token(body, msg.token);
  if (target.empty()) {  // jobs/get
    json in_progress = json::array();
    json queued = json::array();
    for (const auto& c : twin.commands) {
      if (c.status == CommandStatus::kSent) in_progress.push_back(job_summary(c));
      if (c.status == CommandStatus::kQueued) queued.push_back(job_summary(c));
    }
    body["inProgressJobs"] = std::move(in_progress);
    body["queuedJobs"] = std::move(queued);
    out.outputs.push_back(ShadowReply{ShadowOp::kGet, std::move(body), "get/accepted"});
    return Status::ok();
  }
  const bool start = target == "$start-next";
  if (start || target == "$next") {
    Command* c = next_pending(twin);
    if (c != nullptr && start) {
      // Started: a queued one is delivered now, a sent one gets its deadline renewed.
      if (c->status == CommandStatus::kQueued) {
        deliver(twin, *c, now, out);
      } else {
        c->ack_deadline = now + seconds_to_ms(policy_.command_ack_timeout_s);
        mark(out, *c);
      }
    }
    if (c != nullptr) body["execution"] = job_execution(twin, *c, true);
    out.outputs.push_back(ShadowReply{ShadowOp::kGet, std::move(body),
                                      start ? "start-next/accepted" : "$next/get/accepted"});
    return Status::ok();
  }
  Command* c = find_command(twin, target);
  if (c == nullptr) {
    return Status(StatusCode::kNotFound,
                  "no job execution '" + std::string(target) + "' for thing '" + twin.id + "'");
  }
  body["execution"] = job_execution(twin, *c, true);
  out.outputs.push_back(
      ShadowReply{ShadowOp::kGet, std::move(body), std::string(target) + "/get/accepted"});
  return Status::ok();
}

Status TwinLogic::on_job_update(Twin& twin, std::string_view job_id, const JobUpdateMessage& msg,
                                Millis now, Outcome& out) const {
  Command* c = find_command(twin, job_id);
  if (c == nullptr) {
    return Status(StatusCode::kNotFound,
                  "no job execution '" + std::string(job_id) + "' for thing '" + twin.id + "'");
  }
  if (c->status != CommandStatus::kSent && c->status != CommandStatus::kQueued) {
    return Status(StatusCode::kConflict, "job execution '" + std::string(job_id) + "' is " +
                                             std::string(aws_job_status(c->status)) +
                                             " already; it cannot change");
  }
  if (c->status == CommandStatus::kQueued) deliver(twin, *c, now, out);  // it started it
  on_command_result(twin, job_id, msg.result, now, out);  // may drop old finished commands
  c = find_command(twin, job_id);
  if (msg.step_timeout_s && c != nullptr && c->status == CommandStatus::kSent) {
    c->ack_deadline = now + seconds_to_ms(*msg.step_timeout_s);
    mark(out, *c);
  }
  json body = {{"timestamp", aws_seconds(now)}};
  with_token(body, msg.token);
  out.outputs.push_back(
      ShadowReply{ShadowOp::kUpdate, std::move(body), std::string(job_id) + "/update/accepted"});
  return Status::ok();
}

void TwinLogic::finish(Twin& twin, Command& c, CommandStatus status, Millis now,
                       Outcome& out) const {
  set_status(c, status, now, out, policy_.record_changes);
  c.ack_deadline.reset();
  mark(out, c);
  twin.updated_at = now;
  out.twin_changed = true;
}

void TwinLogic::drop_old_finished_commands(Twin& twin, Outcome& out) const {
  size_t finished = 0;
  for (const auto& c : twin.commands) finished += is_terminal(c.status) ? 1 : 0;
  if (finished <= policy_.finished_commands_kept) return;
  size_t drop = finished - policy_.finished_commands_kept;
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

void TwinLogic::command_alarms(Twin& twin, Millis now, Outcome& out) const {
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
  drop_old_finished_commands(twin, out);
}

}  // namespace doppel::twins
