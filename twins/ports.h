// The ports through which the twin runtime reaches the outside world (DESIGN §1): persistence,
// the device transport (DeviceChannel) and the wire format (DeviceCodec). The storage and mqtt
// modules implement them.
//
// Persistence is split by who uses it, each part with its contract: ShardStore (the runtime's
// shards, output gate and deadline scanner), EventLog (the change feed and retention), FleetStore
// (the blocking fleet reads: listing, queries, counts, as-of history) and JobStore (jobs). A
// backend implements all four as one TwinStore, which the gateway wires into each consumer; the
// in-memory test double (tests/support/memory_store.h) implements ShardStore and EventLog whole.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "twins/as_of.h"
#include "twins/device_io.h"
#include "twins/jobs.h"
#include "twins/partition.h"
#include "twins/query.h"
#include "twins/record.h"
#include "twins/status.h"

namespace doppel::twins {

using CommitCallback = std::function<void(const Status&)>;

struct DueTwin {
  std::string id;
  Millis due = 0;
};

// What the runtime's shards need: their twins' committed state, the group commit with its output
// gate, and the deadline index. Thread-safe.
class ShardStore {
 public:
  virtual ~ShardStore() = default;

  // The committed state of a twin, or nullopt if none. Called by shard threads.
  virtual Result<std::optional<StoredTwin>> load(const std::string& id) = 0;

  // Queues `write` for the next group commit and returns its sequence number (increasing).
  // `on_commit` runs exactly once, after the write is durable (OK) or has failed (error), on the
  // store's writer thread, in sequence order; it must not block. Every callback of a commit has
  // run before committed_seq() covers it, so a caller that sees committed_seq() >= its sequence
  // has already been told whether that write failed.
  //
  // A failed write poisons its twin: later writes of that twin fail too (they were made on top of
  // a change that never reached the disk) until discard() is called for it.
  //
  // A write whose `epoch` is not its partition's current one fails with kFenced and changes
  // nothing (twins/partition.h): checked in the transaction that would apply it, so a write
  // never lands after its partition changed owner.
  virtual uint64_t write(TwinWrite write, CommitCallback on_commit) = 0;

  // The epoch under which this store holds `partition` now: what a twin loaded from now on
  // writes with (read it before load()). Cheap.
  virtual uint64_t epoch(uint32_t partition) const = 0;

  // The caller dropped its in-memory copy of twin `id` and will reload it: writes of `id` queued
  // before this call fail instead of applying, and writes queued after it apply again.
  virtual void discard(const std::string& id) = 0;

  // Runs `callback` once every write up to `seq` has been processed: inline if that is already so.
  // The status is an error when the write `seq` itself failed.
  virtual void when_committed(uint64_t seq, CommitCallback callback) = 0;
  virtual uint64_t committed_seq() const = 0;

  // Blocks until every write queued so far is committed and its callback has run.
  virtual void flush() = 0;

  // Up to `limit` twins of `partitions` whose next deadline is after (after_due, after_id) and at
  // most `up_to`, ordered by (deadline, id): a paged scan of the deadline index.
  virtual Result<std::vector<DueTwin>> due(const PartitionFilter& partitions, Millis after_due,
                                           const std::string& after_id, Millis up_to,
                                           size_t limit) = 0;

  // How many twins there are, and stored commands per status ("queued" -> 12, ...): the
  // metrics at start-up.
  virtual Result<uint64_t> count() = 0;
  virtual Result<std::vector<std::pair<std::string, uint64_t>>> command_counts() = 0;
};

// The change feed (events.h): every committed change event, in one order. Thread-safe.
//
// The order: seqs increase in commit order, and a reader that has seen seq N never later meets an
// event with a smaller seq it has not seen (no event commits behind one already visible), so
// "after N" is a complete position. With one writer that holds by construction; a backend with
// several writers must keep it (assign seqs when committing, or publish only the prefix that has
// no gaps left open).
class EventLog {
 public:
  virtual ~EventLog() = default;

  // Events matching `query`, oldest first, at most query.limit; the store looks at a bounded
  // number of events per call (EventPage::scanned_to says how far). Committed ones only.
  // Blocks (a read): not on a network thread.
  virtual Result<EventPage> events(const EventQuery& query) = 0;
  virtual Result<EventBounds> event_bounds() = 0;
  // The highest committed event seq, from memory (0: none yet). Cheap.
  virtual uint64_t last_event_seq() const = 0;
  // `listener` runs on the writer thread after each commit that stored events, with the new
  // last_event_seq() and the events of that commit; it must not block. One listener; set before
  // writes start.
  using EventsListener =
      std::function<void(uint64_t last_seq, const std::vector<EventRecord>& committed)>;
  virtual void on_events(EventsListener listener) = 0;
  // Deletes events older than `before_ts`, and the oldest reported.updated events beyond
  // `max_reported` of them, oldest first, in small transactions; returns how many went. Before a
  // twin's events go, its state where they end is kept as a snapshot (as_of.h).
  virtual Result<uint64_t> prune_events(Millis before_ts, uint64_t max_reported) = 0;
};

// The blocking reads over the whole fleet's committed state: listing, fleet queries (query.h),
// counts and as-of history. Thread-safe; each blocks (a read): not on a network thread.
class FleetStore {
 public:
  virtual ~FleetStore() = default;

  // Up to `limit` twins with id > `after_id`, in id order.
  virtual Result<std::vector<StoredTwin>> list(const std::string& after_id, size_t limit) = 0;

  // A page of twins matching query.where, in query.order, and where the next page starts.
  using TwinPage = std::pair<std::vector<StoredTwin>, std::optional<QueryCursor>>;
  virtual Result<TwinPage> query(const TwinQuery& query) = 0;
  // How many twins match `where`, and with `group_by` how many per value of that field. A read
  // past `budget.deadline` fails with kTimeout (also query()'s, with TwinQuery::budget).
  virtual Result<FleetCount> count_where(const QueryExpr& where,
                                         const std::optional<QueryField>& group_by,
                                         const ReadBudget& budget) = 0;

  // What an as-of read of twin `id`'s current incarnation needs (as_of.h): the nearest
  // snapshot at or before `at` and the events after it.
  virtual Result<HistorySlice> history_slice(const std::string& id, const AsOf& at) = 0;
};

// Jobs (jobs.h): their rows and executions, over committed state, and the job-level writes.
// Thread-safe.
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Queues a job-level write for the next group commit, like ShardStore::write (the same
  // sequence, callbacks and commit waits), applied apart from the twin writes batched with it: if
  // it fails, it fails alone. Poisons nothing.
  virtual uint64_t write(JobWrite write, CommitCallback on_commit) = 0;

  virtual Result<std::optional<JobRecord>> job(const std::string& id) = 0;
  // Up to `limit` jobs with id > `after_id` (of one status, or all), in id order.
  virtual Result<std::vector<JobRecord>> jobs(std::optional<JobStatus> status,
                                              const std::string& after_id, size_t limit) = 0;
  virtual Result<JobCounts> job_counts(const std::string& id) = 0;
  // `listener` runs on the writer thread after each commit that changed the execution counts of
  // some jobs, with their ids (each once); it must not block. One listener; set before writes
  // start. The job engine reads a job's counts when told, instead of polling them.
  using JobCountsListener = std::function<void(const std::vector<std::string>& jobs)>;
  virtual void on_job_counts(JobCountsListener listener) = 0;
  // Up to `limit` of job `id`'s executions with twin > `after_twin` (of one status, or all), in
  // twin order.
  virtual Result<std::vector<ExecutionRecord>> executions(const std::string& id,
                                                          std::optional<ExecStatus> status,
                                                          const std::string& after_twin,
                                                          size_t limit) = 0;
  // Up to `limit` ids of twins matching `where` with id > `after_id`, in id order, leaving out
  // those that job `not_in_job` already has an execution for (when not empty): how jobs find
  // their targets, on a reader, page by page, never inside the writer's transaction.
  virtual Result<std::vector<std::string>> matching_ids(const QueryExpr& where,
                                                        const std::string& not_in_job,
                                                        const std::string& after_id,
                                                        size_t limit) = 0;
};

// A whole store: what a backend implements, and what the gateway wires into each consumer.
class TwinStore : public ShardStore, public EventLog, public FleetStore, public JobStore {
 public:
  using JobStore::write;
  using ShardStore::write;
  // Commits what is queued and stops the writer; later writes fail. Idempotent.
  virtual void close() = 0;
  // Whether the store takes writes now: false once closed, and while a database server it needs
  // is unreachable (it reconnects by itself). /readyz.
  virtual bool available() const = 0;
};

// Sends messages to devices. publish() is thread-safe and must not block for long (it is called
// from the store's writer thread, behind the output gate).
class DeviceChannel {
 public:
  virtual ~DeviceChannel() = default;
  virtual void publish(Outbound message) = 0;
};

// Turns payload bytes into device messages and back, in JSON or Protobuf, in Doppel's own dialect
// or AWS IoT's (JSON only). Thread-safe.
class DeviceCodec {
 public:
  virtual ~DeviceCodec() = default;
  // kMalformed / kTooLarge / kTooDeep / kInvalidArgument with a precise message on bad input.
  virtual Result<DeviceMessage> decode(InboundKind kind, std::string_view payload, Wire wire,
                                       const Limits& limits) const = 0;
  virtual std::string encode(const DeviceOutput& output, Wire wire) const = 0;
  // The request's correlation token when decode() refused it, if one can be read (the AWS
  // dialect's clientToken), so the refusal can carry it. Empty by default.
  virtual std::string refused_token(std::string_view /*payload*/, Wire /*wire*/,
                                    const Limits& /*limits*/) const {
    return {};
  }
};

}  // namespace doppel::twins
