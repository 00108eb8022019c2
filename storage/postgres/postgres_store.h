// PostgresTwinStore: the runtime's store ports on a PostgreSQL server (--store postgresql://...),
// for fleets that need their twins in a database server that ops already back up, replicate and
// monitor: the whole TwinStore, with the same semantics as SQLite's.
//
// Writes are group-committed as with SQLite (storage/group_commit.h, storage/batch_plan.h): one
// writer connection takes everything queued and writes it in one transaction of multi-row
// statements — each table's rows as arrays, INSERT ... SELECT FROM unnest(...) — sent in libpq's
// pipeline mode: BEGIN, the write lock and the partitions' epochs in one round trip, then every
// statement and COMMIT in a second (a batch that carries job executions or job-level writes takes
// a few more, for their answers), whatever its size; then the commit callbacks run in order (the
// output gate). Every connection commits synchronously (synchronous_commit = on, never off: a 2xx
// means the server has the change on its disk).
//
// When the server goes away, the batch in flight fails (its twins reload their committed state),
// later batches fail at once while the writer reconnects with backoff (100 ms doubling to 5 s),
// and the store recovers by itself. A failed commit is never retried, so nothing is applied twice;
// a commit whose answer was lost may have applied, which the twins' reload then reads.
//
// Thread-safety: every public member is thread-safe. Callbacks run on the writer thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage/commit_metrics.h"
#include "storage/event_tail.h"
#include "storage/group_commit.h"
#include "twins/metrics.h"
#include "twins/ports.h"

namespace doppel::storage {

namespace pg {
class Connection;
class Rows;
}  // namespace pg

struct PostgresOptions {
  std::string uri;              // a libpq URI: postgresql://user[:password]@host:port/db
  size_t max_batch = 8192;      // writes per transaction at most
  size_t max_queued = 100'000;  // writers wait beyond this (backpressure)
  // How long a batch may wait for more writes under a steady stream (group_commit.h).
  std::chrono::microseconds commit_gather{kDefaultCommitGather};
  // Fleet-query fields to keep expression indexes on (--index), e.g. "reported.fw".
  std::vector<std::string> indexes;
  // A node of a cluster (doppeld --cluster, issue #22): it claims no partition at open — each
  // partition's epoch comes from set_epoch() as its lease is gained and lost — and the events
  // other nodes commit reach on_events() too (LISTEN doppel_events, and a read of what is new).
  bool cluster = false;
  // A cluster node's writer connection: statement_timeout and idle_in_transaction_session_timeout
  // (0: none). Shorter than the lease, so that the transaction of a node that froze — it holds
  // its partitions' rows FOR SHARE — ends before its lease does, and another node can take them.
  std::chrono::milliseconds writer_timeout{0};
};

class PostgresTwinStore final : public twins::TwinStore {
 public:
  // Connects, migrates the schema and starts the writer. Fails (saying what to do) when the
  // server cannot be reached, refuses the login, or has no such database.
  static Result<std::unique_ptr<PostgresTwinStore>> open(PostgresOptions options, Metrics& metrics);
  ~PostgresTwinStore() override;

  // ShardStore
  Result<std::optional<twins::StoredTwin>> load(const std::string& id) override;
  uint64_t write(twins::TwinWrite write, twins::CommitCallback on_commit) override;
  uint64_t write(twins::JobWrite write, twins::CommitCallback on_commit) override;
  void discard(const std::string& id) override;
  void when_committed(uint64_t seq, twins::CommitCallback callback) override;
  uint64_t committed_seq() const override { return committer_.committed_seq(); }
  void flush() override;
  // The epoch this store holds the partition at: claimed when it opened, or (a cluster node) the
  // one its lease was acquired at; 0 while not held.
  uint64_t epoch(uint32_t partition) const override {
    return epochs_[partition % epochs_.size()].load();
  }
  // A cluster node's lease on `partition` was acquired at `epoch` (0: lost or given up).
  void set_epoch(uint32_t partition, uint64_t epoch) {
    epochs_[partition % epochs_.size()].store(epoch);
  }
  Result<std::vector<twins::DueTwin>> due(const twins::PartitionFilter& partitions,
                                          twins::Millis after_due, const std::string& after_id,
                                          twins::Millis up_to, size_t limit) override;
  Result<uint64_t> count() override;
  Result<std::vector<std::pair<std::string, uint64_t>>> command_counts() override;

  // EventLog
  Result<twins::EventPage> events(const twins::EventQuery& query) override;
  Result<twins::EventBounds> event_bounds() override;
  uint64_t last_event_seq() const override { return last_event_seq_.load(); }
  void on_events(EventsListener listener) override { events_listener_ = std::move(listener); }
  Result<uint64_t> prune_events(twins::Millis before_ts, uint64_t max_reported) override;

  // FleetStore
  Result<std::vector<twins::StoredTwin>> list(const std::string& after_id, size_t limit) override;
  Result<TwinPage> query(const twins::TwinQuery& query) override;
  Result<twins::FleetCount> count_where(const twins::QueryExpr& where,
                                        const std::optional<twins::QueryField>& group_by,
                                        const twins::ReadBudget& budget) override;
  Result<twins::HistorySlice> history_slice(const std::string& id, const twins::AsOf& at) override;

  // JobStore
  Result<std::optional<twins::JobRecord>> job(const std::string& id) override;
  Result<std::vector<twins::JobRecord>> jobs(std::optional<twins::JobStatus> status,
                                             const std::string& after_id, size_t limit) override;
  Result<twins::JobCounts> job_counts(const std::string& id) override;
  void on_job_counts(JobCountsListener listener) override {
    std::lock_guard lock(listener_mu_);
    job_counts_listener_ = std::move(listener);
  }
  Result<std::vector<twins::ExecutionRecord>> executions(const std::string& id,
                                                         std::optional<twins::ExecStatus> status,
                                                         const std::string& after_twin,
                                                         size_t limit) override;
  Result<std::vector<std::string>> matching_ids(const twins::QueryExpr& where,
                                                const std::string& not_in_job,
                                                const std::string& after_id, size_t limit) override;

  // Commits what is queued and stops the writer. Later writes fail.
  void close() override;
  // Whether the writer is connected (false while the server is away, and once closed), and no
  // other doppeld has claimed the database's partitions since this one did.
  bool available() const override {
    return available_.load() && !closed_.load() && !fenced_.load();
  }
  // Test hook: the next `n` group commits fail after writing, before COMMIT.
  void fail_next_commits(int n) { fail_next_commits_.store(n); }
  // Test hook: the next `n` job-level writes fail after applying (as a statement that cannot run).
  void fail_next_job_writes(int n) { fail_next_job_writes_.store(n); }

 private:
  struct Writer;

  PostgresTwinStore(PostgresOptions options, Metrics& metrics);
  void writer_loop();
  // A cluster node's: hears other nodes' commits (LISTEN) and hands their events to the
  // listener, as the writer does its own.
  void listen_loop();
  // Fails with kFenced the writes of `batch` whose epoch is not their partition's current one
  // (`current`: partition_id, epoch, owner, read in the writer's transaction after its lock).
  void fence(const pg::Rows& current, GroupCommitter::Batch& batch);
  // The writer connection's session: its statements prepared, generic plans, and
  // PostgresOptions::writer_timeout.
  Status writer_session(pg::Connection& db) const;
  // Connects the writer if it is not (at most once per backoff interval); throws pg::Failure.
  void connect_writer();
  // Runs `read(connection)` on a pooled reader connection; a connection that failed is dropped
  // (the next read opens a new one). A failure becomes a Status saying what failed.
  template <typename Read>
  auto with_reader(const std::string& what, Read&& read)
      -> decltype(read(std::declval<pg::Connection&>()));

  PostgresOptions options_;
  GroupCommitter committer_;
  std::unique_ptr<Writer> writer_;  // used by the writer thread only, after open()
  std::thread thread_;
  std::mutex stop_mu_;
  bool stopping_ = false;
  std::atomic<bool> closed_{false};
  std::atomic<bool> available_{false};
  std::atomic<bool> fenced_{false};  // a write was fenced: another doppeld holds the partitions
  // The epoch of each partition: claimed at open (every one: a single node owns them all, and
  // the newest doppeld started on a database fences the one before), or set by a cluster node.
  std::array<std::atomic<uint64_t>, twins::kPartitions> epochs_{};
  std::thread listener_;  // cluster: listen_loop()
  std::atomic<bool> listen_stop_{false};
  std::atomic<int> fail_next_commits_{0};
  std::atomic<int> fail_next_job_writes_{0};

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<pg::Connection>> readers_;
  std::mutex prune_mu_;  // one pruning pass at a time, on its own connection
  std::unique_ptr<pg::Connection> pruner_;

  CommitMetrics commit_metrics_;
  Counter* reconnects_;
  Counter* fenced_writes_;

  std::atomic<uint64_t> last_event_seq_{0};
  EventTail tail_;
  EventsListener events_listener_;
  std::mutex listener_mu_;  // job_counts_listener_ (set while the writer runs)
  JobCountsListener job_counts_listener_;
};

}  // namespace doppel::storage
