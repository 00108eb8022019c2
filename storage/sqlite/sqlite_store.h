// SqliteTwinStore: the TwinStore port on one SQLite file in WAL mode (DESIGN §8).
//
// Writes are group-committed by one writer thread: it takes everything queued, writes it in one
// transaction (the latest row per twin only), commits, then runs the commit callbacks in order —
// which is where the runtime's output gate opens. Under light load a batch is one write and the
// gate costs one commit; under heavy load batches grow and the cost per write falls.
// Reads use a pool of reader connections, so shard threads read in parallel with the writer.
//
// Thread-safety: every public member is thread-safe. Callbacks run on the writer thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "storage/commit_metrics.h"
#include "storage/event_tail.h"
#include "storage/group_commit.h"
#include "twins/metrics.h"
#include "twins/ports.h"

namespace doppel::storage {

namespace detail {
class Database;
}

enum class Durability {
  kNormal,  // synchronous=NORMAL: survives a process crash; an OS crash may lose the last commits
  kFull,    // synchronous=FULL: every commit reaches the disk before the gate opens
};

struct StoreOptions {
  std::string path;  // the database file; created with its schema if missing
  Durability durability = Durability::kNormal;
  size_t max_batch = 8192;      // writes per transaction at most
  size_t max_queued = 100'000;  // writers wait beyond this (backpressure)
  // How long a batch may wait for more writes under a steady stream (group_commit.h).
  std::chrono::microseconds commit_gather{kDefaultCommitGather};
  // Fleet-query fields to keep an expression index on (--index), e.g. "reported.fw".
  std::vector<std::string> indexes;
};

class SqliteTwinStore final : public twins::TwinStore {
 public:
  // Opens (creating and migrating as needed) and starts the writer thread.
  static Result<std::unique_ptr<SqliteTwinStore>> open(StoreOptions options, Metrics& metrics);
  ~SqliteTwinStore() override;

  Result<std::optional<twins::StoredTwin>> load(const std::string& id) override;
  uint64_t write(twins::TwinWrite write, twins::CommitCallback on_commit) override;
  uint64_t write(twins::JobWrite write, twins::CommitCallback on_commit) override;
  void discard(const std::string& id) override;
  void when_committed(uint64_t seq, twins::CommitCallback callback) override;
  uint64_t committed_seq() const override { return committer_.committed_seq(); }
  Result<std::vector<twins::StoredTwin>> list(const std::string& after_id, size_t limit) override;
  // One file has one owner: every partition stays at kFirstEpoch.
  uint64_t epoch(uint32_t /*partition*/) const override { return twins::kFirstEpoch; }
  Result<std::vector<twins::DueTwin>> due(const twins::PartitionFilter& partitions,
                                          twins::Millis after_due, const std::string& after_id,
                                          twins::Millis up_to, size_t limit) override;
  Result<uint64_t> count() override;
  Result<std::vector<std::pair<std::string, uint64_t>>> command_counts() override;
  void flush() override;
  Result<twins::EventPage> events(const twins::EventQuery& query) override;
  Result<twins::EventBounds> event_bounds() override;
  uint64_t last_event_seq() const override { return last_event_seq_.load(); }
  void on_events(EventsListener listener) override { events_listener_ = std::move(listener); }
  Result<uint64_t> prune_events(twins::Millis before_ts, uint64_t max_reported) override;
  Result<twins::HistorySlice> history_slice(const std::string& id, const twins::AsOf& at) override;
  Result<TwinPage> query(const twins::TwinQuery& query) override;
  Result<twins::FleetCount> count_where(const twins::QueryExpr& where,
                                        const std::optional<twins::QueryField>& group_by,
                                        const twins::ReadBudget& budget) override;
  Result<std::vector<std::string>> matching_ids(const twins::QueryExpr& where,
                                                const std::string& not_in_job,
                                                const std::string& after_id, size_t limit) override;
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
  // EXPLAIN QUERY PLAN of the page `query` reads: which indexes it uses (tests, diagnostics).
  Result<std::string> query_plan(const twins::TwinQuery& query);

  // Commits what is queued and stops the writer. Later writes fail.
  void close() override;
  bool is_open() const { return !closed_.load(); }
  bool available() const override { return is_open(); }
  // Test hook: the next `n` group commits fail after writing (as a full disk would).
  void fail_next_commits(int n) { fail_next_commits_.store(n); }
  // Test hook: the next `n` job-level writes fail after applying (as a statement that cannot run).
  void fail_next_job_writes(int n) { fail_next_job_writes_.store(n); }
  int schema_version() const { return schema_version_; }

 private:
  struct Reader;
  struct Writer;

  SqliteTwinStore(StoreOptions options, Metrics& metrics);
  void writer_loop();
  void checkpoint_loop();
  std::unique_ptr<Reader> acquire_reader();
  void release_reader(std::unique_ptr<Reader> reader);
  // Runs `read(Reader&)` on a pooled reader connection and returns what it returns (a Result);
  // an exception becomes to_status's Status saying `what` failed (text, or a callable that
  // makes it only then). The reader goes back to the pool after a read that did not throw.
  template <typename What, typename Read>
  auto with_reader(const What& what, Read&& read) -> decltype(read(std::declval<Reader&>()));

  StoreOptions options_;
  std::unique_ptr<Writer> writer_;
  int schema_version_ = 0;

  GroupCommitter committer_;
  std::atomic<bool> closed_{false};
  std::atomic<int> fail_next_commits_{0};
  std::atomic<int> fail_next_job_writes_{0};
  std::mutex stop_mu_;  // stopping_, and the checkpointer's waits
  bool stopping_ = false;
  std::thread thread_;
  std::thread checkpointer_;
  std::condition_variable checkpoint_cv_;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Reader>> readers_;

  CommitMetrics commit_metrics_;

  std::atomic<uint64_t> last_event_seq_{0};
  EventTail tail_;  // the most recent committed events
  EventsListener events_listener_;
  std::mutex listener_mu_;  // job_counts_listener_ (set while the writer runs)
  JobCountsListener job_counts_listener_;
  std::mutex prune_mu_;  // one pruning pass at a time, on its own connection
  std::unique_ptr<detail::Database> pruner_;
};

}  // namespace doppel::storage
