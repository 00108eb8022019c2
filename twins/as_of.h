// As-of reads (README, "Change feed and history"): a twin's document as it was right after a
// given version, or at a given moment, rebuilt from a snapshot and the events after it.
//
// The store keeps, beside the events, snapshots of each twin's history state: one with the write
// that creates the twin, then one every kSnapshotEveryEvents events (the OutputGate takes them),
// and one the pruner materializes where it cuts the log, so that a snapshot always lies at or
// before a twin's oldest retained event. An as-of read replays at most the events since the
// nearest snapshot. Replay checks that each event follows on from the state (versions advance
// by exactly one with each desired or reported change); an event missing in between — removed
// by retention — makes the read fail as gone rather than answer a state that never existed.
//
// Pure; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twins/events.h"
#include "twins/status.h"
#include "twins/twin.h"

namespace doppel::twins {

// What an as-of read answers about a twin, and all it needs to follow the events on.
struct HistoryState {
  uint64_t version = 0;
  uint64_t desired_version = 0;
  uint64_t reported_version = 0;
  json desired = json::object();
  json reported = json::object();
  json tags = json::object();
  std::optional<double> stale_after_s;
  CommandStrategy command_strategy = CommandStrategy::kSequential;
  ConnectionState connection = ConnectionState::kUnknown;
  LivenessState liveness = LivenessState::kUnknown;
  ReconcileState reconcile = ReconcileState::kConverged;
  uint32_t reconcile_attempts = 0;
  uint64_t reconcile_desired_version = 0;
  uint64_t commands_queued = 0;
  uint64_t commands_sent = 0;
  Millis created_at = 0;
};

HistoryState history_state_of(const Twin& twin);
// The stored form of a snapshot (JSON text), and back: kInternal when it cannot be read.
std::string snapshot_text(const HistoryState& state);
Result<HistoryState> parse_snapshot(std::string_view text);

// A snapshot as stored: the state right after the event `seq` (the last of its write), whose
// write's first event is `step_seq`.
struct Snapshot {
  uint64_t seq = 0;
  uint64_t step_seq = 0;
  Millis ts = 0;
  uint64_t version = 0;
  std::string state;  // snapshot_text()
};

// What an as-of read asks for: right after the write that made `version`, or after the last
// write at or before `ts`. Exactly one is set.
struct AsOf {
  std::optional<uint64_t> version;
  std::optional<Millis> ts;
};

// What the store returns for an as-of read of one twin's current incarnation: the nearest
// snapshot at or before the target and the twin's events after it, up to and including the
// target's write. No base: the store has nothing at or before the target (the twin did not exist
// then, the version was never reached, or retention removed it: the caller tells which).
struct HistorySlice {
  std::optional<Snapshot> base;
  std::vector<EventRecord> events;
  // No base because the current incarnation was created at a later version than asked for.
  bool before_creation = false;
};

// Applies `event` (the twin's next one, in seq order) to `state`. kNotFound (with what is
// missing) when it does not follow on from `state`: an event in between was removed.
Status replay(HistoryState& state, const EventRecord& event);

// The snapshot plus the slice's events; kNotFound when there is no base or an event is missing.
// `at_seq` / `at_ts` receive the position of the last event applied (the base's when none).
Result<HistoryState> rebuild(const HistorySlice& slice, uint64_t* at_seq = nullptr,
                             Millis* at_ts = nullptr);

// The document an as-of read answers: the twin document's fields that history keeps (id,
// version, desired, reported, delta, their versions, tags, stale_after_s, connection, liveness
// and reconcile states, command counts and strategy, created_at), plus "as_of": {seq, ts}.
json as_of_document(const std::string& id, const HistoryState& state, uint64_t seq, Millis ts);

}  // namespace doppel::twins
