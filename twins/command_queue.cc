// TwinLogic's command queue: enqueue (idempotency keys), cancel, dispatch by the twin's strategy,
// delivery and re-delivery, the end of a command (its result, TTL or ack timeout: the alarm), and
// how many finished commands are kept.
#include "twins/twin_logic.h"

#include <algorithm>

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
  if (twin.dialect == Dialect::kAws) {
    // Refused rather than queued where the device would never look: AWS IoT firmware takes
    // commands from the Jobs topics, which this version does not offer yet.
    return Status(StatusCode::kConflict,
                  "twin '" + twin.id +
                      "' is a device that speaks the AWS IoT dialect; it takes commands through "
                      "AWS IoT Jobs topics, which Doppel does not offer yet: change its desired "
                      "state instead");
  }
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
  out.outputs.push_back(CommandOut{c.id, c.name, c.args, c.expires_at});
  out.events.push_back(TwinEvent::kCommandSent);
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
