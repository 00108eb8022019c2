// The persisted form of a twin: what the store ports (ports.h) store and return. The twin module
// owns the record body's format (storage keeps those bytes as they are) and fills, beside it, the
// columns a store indexes and queries — versions, states, tags, command counts, encoding, the
// next deadline — so a store needs no knowledge of the domain to answer fleet queries.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "twins/events.h"
#include "twins/jobs.h"
#include "twins/status.h"
#include "twins/twin.h"

namespace doppel::twins {

struct TwinRecord {
  std::string id;
  uint64_t version = 0;
  std::string desired;        // JSON text, so SQL can query it later (json_extract)
  std::string reported;       // JSON text
  std::string desired_meta;   // MessagePack
  std::string reported_meta;  // MessagePack
  std::string body;           // everything else, MessagePack
  std::optional<Millis> next_deadline;
  Millis updated_at = 0;
  // Copies of what the body holds, as columns fleet queries filter, sort and count on
  // (query.h); the body stays the source a twin is loaded from.
  std::string tags = "{}";  // JSON text
  uint64_t desired_version = 0;
  uint64_t reported_version = 0;
  Millis created_at = 0;
  std::string liveness;
  std::optional<Millis> last_seen;
  std::string connection;
  std::string reconcile;
  uint32_t reconcile_attempts = 0;
  uint64_t commands_queued = 0;
  uint64_t commands_sent = 0;
  std::string encoding;
  std::string dialect;
  // Whether the liveness, connection or reconcile state or the next deadline may differ from the
  // stored row's: only then does the store rewrite those indexed columns (most writes are reports
  // that change none of them, and an index entry rewritten costs the writer).
  bool states_changed = true;
};

struct CommandRecord {
  uint64_t seq = 0;
  std::string id;
  std::string status;
  std::string body;  // MessagePack
};

struct StoredTwin {
  TwinRecord twin;
  std::vector<CommandRecord> commands;  // in seq order
};

// One twin's changes from one step, applied atomically within a group commit.
struct TwinWrite {
  std::string id;
  // Ownership (twins/partition.h): partition_of(id), and the epoch under which the writer holds
  // the twin (ShardStore::epoch when it was loaded). A store fails the write with kFenced when
  // that epoch is no longer the partition's current one.
  uint32_t partition = 0;
  uint64_t epoch = 0;
  bool delete_twin = false;
  // Someone is waiting for this write (an operator's request): the store commits it with the
  // writes already queued instead of holding it to gather more (GroupCommitter's gathering).
  bool urgent = false;
  std::optional<TwinRecord> twin;
  std::vector<CommandRecord> upsert_commands;
  std::vector<uint64_t> delete_commands;  // by seq
  // The change events of this write (events.h), stored in the same transaction, in this order;
  // their seq is assigned then.
  std::vector<EventRecord> events;
  // With events only: the twin's history state after this write (as_of.h snapshot_text), to
  // keep as a snapshot at its last event. Empty: none due.
  std::string snapshot;

  // Jobs (jobs.h): execution rows to upsert, in the same transaction as the twin's change.
  std::vector<ExecutionRecord> executions;
};

// A job-level change, which no twin carries (JobStore::write): job rows to upsert; executions to
// upsert (one the engine records itself, such as a target that does not exist); executions to add
// as pending for `targets_job` (ignoring those the job already has) — `targets_twins`, which the
// engine read from a reader (JobStore::matching_ids), never a query run by the writer; with
// `reset_targets`, first whatever executions and counts `targets_job` has (left by a creation
// that did not finish); and a job whose pending executions all become cancelled with
// `cancel_detail`. A store applies it apart from the twin writes batched with it: if it fails, it
// fails alone, and they commit. In a cluster the job's owner sets `partition` (the job id's) and
// the `epoch` under which it runs the job: the write is then fenced as a twin's is (kFenced once
// the partition changed owner), so a paused former owner cannot end or cancel a job another node
// runs now.
struct JobWrite {
  std::vector<JobRecord> jobs;
  std::vector<EventRecord> events;  // job.* change events, stored with the write (or not at all)
  std::vector<ExecutionRecord> executions;
  std::string targets_job;
  bool reset_targets = false;
  std::vector<std::string> targets_twins;
  Millis targets_at = 0;
  std::string cancel_pending_job;
  std::string cancel_detail;
  std::optional<uint32_t> partition;
  uint64_t epoch = 0;
};

// Serializes the twin; also refreshes twin.desired_bytes / reported_bytes and the cached
// serialization of the desired side (reused until desired_version changes).
TwinRecord to_record(Twin& twin, std::optional<Millis> next_deadline);
CommandRecord to_record(const Command& command);
// kInternal when a stored row cannot be read back (corruption); the twin is then unusable.
Result<Twin> from_record(const StoredTwin& stored);

}  // namespace doppel::twins
