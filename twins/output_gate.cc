#include "twins/output_gate.h"

#include <vector>

#include "twins/as_of.h"
#include "twins/log.h"
#include "twins/partition.h"

namespace doppel::twins {
namespace {

// A write of `h`, with the ownership it was loaded under.
// The next deadline a write stores with the twin: its own `due`, unless the row already holds an
// earlier one that is still ahead of `now`. The scanner then brings the twin back that early, and
// the alarm finds nothing due yet (on_alarm acts only on what has come) and stores `due`; in
// exchange a twin that reports often does not move its deadline in the index with every report —
// on PostgreSQL such an update changes no indexed column, so it is a heap-only (HOT) update that
// writes no index. A stored deadline is never later than the twin's own, and one that has passed
// is always replaced, so the scanner cannot go past an alarm.
std::optional<Millis> row_deadline(std::optional<Millis> stored, std::optional<Millis> due,
                                   Millis now) {
  if (stored && due && *stored <= *due && *stored > now) return stored;
  return due;
}

TwinWrite write_of(const HotTwin& h) {
  TwinWrite w;
  w.id = h.twin.id;
  w.partition = partition_of(h.twin.id);
  w.epoch = h.epoch;
  return w;
}

}  // namespace

OutputGate::OutputGate(ShardStore& store, DeviceChannel& channel, const DeviceCodec& codec,
                       RuntimeStats& stats, const DeadlineScanner& scanner, Hooks hooks,
                       bool history)
    : store_(store),
      channel_(channel),
      codec_(codec),
      stats_(stats),
      scanner_(scanner),
      hooks_(std::move(hooks)),
      history_(history) {}

std::vector<EventRecord> OutputGate::events_of(const Twin& twin, Outcome& out) const {
  std::vector<EventRecord> events;
  if (!history_) return events;
  if (out.before) state_events(*out.before, twin, out.changes);
  if (out.changes.empty()) return events;
  const json cause = cause_json(out.cause);
  events.reserve(out.changes.size());
  for (ChangeEvent& c : out.changes) {
    EventRecord e;
    e.ts = out.at;
    e.twin = twin.id;
    e.kind = std::move(c.kind);
    e.version = twin.version;
    c.fields["cause"] = cause;
    e.body = to_text(c.fields);
    events.push_back(std::move(e));
  }
  out.changes.clear();
  return events;
}

void OutputGate::count(const Twin& twin, const Outcome& out) {
  for (TwinEvent e : out.events) {
    stats_.events[static_cast<size_t>(e)]->inc();
    const bool notable = e == TwinEvent::kStale || e == TwinEvent::kReconcileFailed ||
                         e == TwinEvent::kCommandTimedOut || e == TwinEvent::kCommandExpired;
    const LogLevel level = notable ? LogLevel::kInfo : LogLevel::kDebug;
    if (log_enabled(level)) log(level, std::string(to_string(e)) + " twin=" + twin.id);
    if (e == TwinEvent::kCreated) stats_.total->add(1);
  }
  for (const auto& [from, to] : out.command_transitions) stats_.transition(from, to);
}

void OutputGate::commit(HotTwin& h, Outcome& out, std::optional<Millis> deadline, bool scheduled,
                        CommitCallback after) {
  count(h.twin, out);
  std::vector<Outbound> outbound;
  outbound.reserve(out.outputs.size());
  for (const DeviceOutput& o : out.outputs) {
    Outbound msg;
    msg.device_id = h.twin.id;
    msg.kind = kind_of(o);
    if (const auto* cmd = std::get_if<CommandOut>(&o)) msg.command_id = cmd->id;
    msg.encoding = h.twin.encoding;
    msg.dialect = h.twin.dialect;
    msg.bulk = out.cause.source == CauseSource::kJob;
    if (const auto* reply = std::get_if<ShadowReply>(&o)) {
      msg.op = reply->op;
      msg.jobs_topic = reply->jobs_topic;
    }
    msg.payload = codec_.encode(o, Wire(msg.encoding, msg.dialect));
    outbound.push_back(std::move(msg));
  }
  const bool needs_release = !outbound.empty() || after || (!scheduled && deadline);

  CommitCallback release = [this, id = h.twin.id, outbound = std::move(outbound),
                            after = std::move(after), deadline,
                            scheduled](const Status& s) mutable {
    if (s.is_ok()) {
      for (auto& msg : outbound) channel_.publish(std::move(msg));
      // A deadline the scanner may have passed over while this write was in flight.
      if (!scheduled && deadline && *deadline <= scanner_.horizon()) hooks_.wake(id, *deadline);
    } else {
      stats_.store_failures->inc();
      log_error("store failed to commit twin '" + id + "': " + s.to_string() +
                "; reloading it from the store");
      hooks_.failed(id);
    }
    if (after) after(s);
  };

  std::vector<EventRecord> events = events_of(h.twin, out);
  // A stored deadline that has passed is replaced even when nothing else changed (an alarm that
  // found nothing due yet): the scanner has gone past it and would not bring the twin again.
  const std::optional<Millis> stored = row_deadline(h.stored_deadline, deadline, out.at);
  const bool deadline_moved = stored != h.stored_deadline;
  if (out.changed() || !events.empty() || deadline_moved) {
    TwinWrite w = write_of(h);
    w.urgent = out.cause.source == CauseSource::kApi;
    if (!events.empty()) {
      // Before to_record: the count is stored with the twin.
      h.twin.events_since_snapshot += static_cast<uint32_t>(events.size());
      if (h.twin.events_since_snapshot >= kSnapshotEveryEvents) {
        w.snapshot = snapshot_text(history_state_of(h.twin));
        h.twin.events_since_snapshot = 0;
      }
    }
    w.events = std::move(events);
    h.stored_deadline = stored;
    w.twin = to_record(h.twin, stored);
    // The step started from the state of the twin's previous write (or of its load).
    w.twin->states_changed =
        !out.before || deadline_moved || out.before->connection != h.twin.connection ||
        out.before->liveness != h.twin.liveness || out.before->reconcile != h.twin.reconcile;
    for (uint64_t seq : out.commands_changed) {
      for (const auto& c : h.twin.commands) {
        if (c.seq == seq) w.upsert_commands.push_back(to_record(c));
      }
    }
    w.delete_commands = std::move(out.commands_removed);
    w.executions = std::move(out.job_updates);
    h.last_write = store_.write(std::move(w), std::move(release));
  } else if (needs_release) {
    if (h.last_write > store_.committed_seq()) {
      store_.when_committed(h.last_write, std::move(release));
    } else if (hooks_.failure_pending(h.twin.id)) {  // read after committed_seq(): see ports.h
      release(Status(StatusCode::kUnavailable,
                     "an earlier change of twin '" + h.twin.id + "' failed to commit"));
    } else {
      release(Status::ok());
    }
  }
}

void OutputGate::remove(HotTwin& h, const Cause& cause, Millis now, CommitCallback after) {
  TwinWrite w = write_of(h);
  w.delete_twin = true;
  w.urgent = cause.source == CauseSource::kApi;
  TwinLogic::abandon_jobs(h.twin, now, "the twin was deleted", w.executions);
  if (history_) {
    EventRecord e;
    e.ts = now;
    e.twin = h.twin.id;
    e.kind = "twin.deleted";
    e.version = h.twin.version;
    e.body = to_text(json{{"cause", cause_json(cause)}});
    w.events.push_back(std::move(e));
  }
  h.last_write =
      store_.write(std::move(w), [this, id = h.twin.id, after = std::move(after)](const Status& s) {
        if (!s.is_ok()) {
          stats_.store_failures->inc();
          log_error("store failed to delete twin '" + id + "': " + s.to_string() +
                    "; reloading it from the store");
          hooks_.failed(id);
        }
        if (after) after(s);
      });
}

}  // namespace doppel::twins
