// The change feed's vocabulary (README, "Change feed"): every committed change of a twin that a
// user can see becomes one event, written in the same store transaction as the change. An event
// is {"seq", "ts", "twin", "kind", "version", "cause", ...the kind's fields}.
//
// Kinds: twin.created, twin.deleted, desired.updated, reported.updated, settings.updated,
// connection.changed, liveness.changed, reconcile.changed, command.changed.
//
// TwinLogic records the events whose fields only it knows (patches, settings, commands) in
// Outcome::changes; the states an event reports on (connection, liveness, reconciliation) are
// compared before and after each step (StateMarks), so that every path that changes them yields
// its event. Pure; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twins/document.h"
#include "twins/twin.h"

namespace doppel::twins {

enum class CauseSource { kApi, kDevice, kAlarm, kSystem, kJob };
std::string_view to_string(CauseSource s);

// Who or what caused a change.
struct Cause {
  CauseSource source = CauseSource::kSystem;
  std::string request_id;  // api: the request's X-Request-Id
  std::string principal;   // api, when tokens are configured: the token's name (never the secret)
  std::string token;       // device: the message's token, when it carried one
  std::string job;         // job: the job's id
};
json cause_json(const Cause& cause);

// One change, before it has a sequence number: its kind and the kind's fields.
struct ChangeEvent {
  std::string kind;
  json fields = json::object();
};

// The states some events report on, as they were before a step.
struct StateMarks {
  ConnectionState connection = ConnectionState::kUnknown;
  LivenessState liveness = LivenessState::kUnknown;
  ReconcileState reconcile = ReconcileState::kConverged;
  uint32_t reconcile_attempts = 0;
  uint64_t reconcile_desired_version = 0;
};
StateMarks marks_of(const Twin& twin);
// connection.changed, liveness.changed and reconcile.changed between `before` and `twin`,
// appended to `out`; reconcile.changed whenever its state, attempts or desired version differ
// (a re-send counts one more attempt).
void state_events(const StateMarks& before, const Twin& twin, std::vector<ChangeEvent>& out);

// The subset of merge patch `patch` that changes `target`: what reported.updated carries (only
// the leaves whose value changed). Empty object: nothing changes.
json changed_leaves(const json& target, const json& patch);

// An event as stored.
struct EventRecord {
  uint64_t seq = 0;  // assigned by the store when it commits
  Millis ts = 0;     // when the shard made the change (its clock)
  std::string twin;
  std::string kind;
  uint64_t version = 0;  // the twin's content version after the change
  std::string body;      // JSON object: "cause" and the kind's fields
};
// The event as clients see it.
json event_json(const EventRecord& event);

// Whether `kind` is one of `filters` (exact, or a prefix ending in ".*"; none: every kind).
bool kind_matches(std::string_view kind, const std::vector<std::string>& filters);

// Which events a reader wants: of some twins (none: all), of some kinds (kind_matches). The one
// definition of a match: the stores' reads, their in-memory tails and the feed's wake-ups use it.
struct EventFilter {
  std::vector<std::string> twins;
  std::vector<std::string> kinds;
  bool matches_twin(std::string_view twin) const;
  bool matches_kind(std::string_view kind) const { return kind_matches(kind, kinds); }
  bool matches(const EventRecord& event) const {
    return matches_twin(event.twin) && matches_kind(event.kind);
  }
};

// A page of the feed: matching events after a sequence number, at most `limit`.
struct EventQuery {
  uint64_t after_seq = 0;
  size_t limit = 100;
  EventFilter filter;
};

// A page of events and how far the store looked: a reader continues after `scanned_to` (which
// may be past the last event returned, when the filters matched nothing further).
// Events that retention removed from inside the retained range (the cap on reported events,
// --history-max-reported-events): some events with from_seq <= seq <= to_seq are gone — `count`
// of them, all of kind `kind` — while others in that range may remain.
struct EventGap {
  uint64_t from_seq = 0;
  uint64_t to_seq = 0;
  uint64_t count = 0;
  std::string kind;
};

struct EventPage {
  std::vector<EventRecord> events;
  // The gaps that overlap (after_seq, scanned_to] and concern the query's kinds, oldest first.
  std::vector<EventGap> gaps;
  uint64_t scanned_to = 0;
  // Served from the store's in-memory tail of recent events: the position asked for is retained.
  bool from_tail = false;
};

// The retained range: oldest and newest stored sequence numbers (0, 0 when none), and the highest
// ever assigned (which pruning never lowers).
struct EventBounds {
  uint64_t oldest = 0;
  uint64_t newest = 0;
  uint64_t last_assigned = 0;
};

}  // namespace doppel::twins
