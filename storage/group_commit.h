// GroupCommitter: the commit protocol of the TwinStore port (twins/ports.h), apart from any I/O,
// so that every store keeps it the same way (the SQLite store, the in-memory test double, and the
// backends to come) — in the manner of RocksDB's WriteThread, which owns the queue of writers and
// leaves the writing to the database.
//
// It owns what the contract promises independently of where the bytes go: sequence numbers in
// queue order, backpressure on a bounded queue, poisoning (a failed write of a twin fails its
// later writes until discard()), callbacks in sequence order before committed_seq() moves, commit
// waits, flush and close. The store's committer (one thread, or a test calling by hand) takes a
// batch, writes it however its backend does, and completes it:
//
//   GroupCommitter::Batch batch;
//   while (committer.take(batch, max_batch, /*wait=*/true)) {
//     Status s = write_in_one_transaction(batch);   // the backend's part; may fail some ops
//     if (!s) committer.fail(batch, s);
//     committer.complete(batch, [&] { /* listeners that must run before seq moves */ });
//   }
//
// Thread-safety: enqueue, discard, when_committed, committed_seq, flush and close are thread-safe;
// take, fail and complete are called by one committer at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "twins/metrics.h"
#include "twins/ports.h"

namespace doppel::storage {

// The stores' default for GroupCommitter's `gather` (their options' commit_gather).
inline constexpr std::chrono::microseconds kDefaultCommitGather{500};

class GroupCommitter {
 public:
  // A twin's write (ShardStore::write) or a job-level one (JobStore::write).
  using Write = std::variant<twins::TwinWrite, twins::JobWrite>;
  struct Op {
    uint64_t seq = 0;
    Write write;
    twins::CommitCallback callback;
    std::chrono::steady_clock::time_point queued_at;  // when enqueue() took it
    // The twin this op writes, or nullptr for a job-level write.
    const twins::TwinWrite* twin() const { return std::get_if<twins::TwinWrite>(&write); }
    // The partition whose ownership epoch this op was made under, if it is fenced: every twin
    // write; a job-level write when its job's owner set one (a cluster's).
    std::optional<uint32_t> fenced_partition() const;
  };
  // The writes of one commit, in sequence order, and the outcome of each (ok until something
  // fails it; a write that poisoning refuses starts failed and must not be applied).
  struct Batch {
    std::vector<Op> ops;
    std::vector<Status> statuses;
    void clear() {
      ops.clear();
      statuses.clear();
    }
  };

  // Where the time of each write goes (doppel_stage_seconds): waiting in the queue until its
  // batch is taken, and from complete() until its callback has run. Either may be null. Set up
  // before the first write.
  void observe_stages(Histogram* queued, Histogram* released) {
    queued_stage_ = queued;
    released_stage_ = released;
  }

  // `max_queued`: enqueue() waits while this many writes are queued (backpressure).
  //
  // `gather`: under a steady stream of writes, how long take() may hold the first queued write
  // for more to join its batch (PostgreSQL's commit_delay, with the arrival rate in place of
  // commit_siblings). A batch costs the backend about the same whether it has one write or ten
  // (the transaction, the pages it rewrites), so a stream committed write by write spends the
  // writer's CPU and the disk on that fixed cost. take() waits only while the writes arriving
  // within one window are expected to be two or more (an average of the rate between takes), and
  // only until that many are queued, or until an urgent write (TwinWrite::urgent: someone waits
  // for it) is queued; a lone write, or a light load, is taken at once. Zero: never.
  explicit GroupCommitter(size_t max_queued = std::numeric_limits<size_t>::max(),
                          std::chrono::microseconds gather = std::chrono::microseconds(0))
      : max_queued_(max_queued), gather_(gather) {}

  // ---- the producers' side (the port's write, discard, when_committed, committed_seq, flush) ----

  // Queues `write` and returns its sequence number. Once closed, `on_commit` runs at once with
  // kUnavailable. Blocks while the queue is full.
  uint64_t enqueue(Write write, twins::CommitCallback on_commit);
  void discard(const std::string& id);
  void when_committed(uint64_t seq, twins::CommitCallback callback);
  uint64_t committed_seq() const { return committed_.load(); }
  // The highest sequence handed out so far.
  uint64_t last_seq() const;
  // Blocks until every write queued so far is complete. Needs a committer that runs on its own.
  void flush();
  size_t queued() const;
  // How many queued writes a gathering take() is waiting for (0: none is waiting).
  size_t gathering_for() const;

  // Stops accepting writes once the queue has drained: take() returns false from then on, and
  // later writes fail at once.
  void close();

  // ---- the committer's side ----

  // Moves up to `max` queued writes into `batch` (cleared first), in sequence order, with their
  // starting statuses. With `wait`, blocks until there is work or close() was called; returns
  // false when closed and drained (and without `wait`, when nothing is queued).
  bool take(Batch& batch, size_t max, bool wait);
  // The batch did not commit: every write of it not already failed fails with `status`, and its
  // twins are poisoned (a job-level write has no in-memory copy to poison).
  void fail(Batch& batch, const Status& status);
  // Write `i` of the batch fails alone with `status` (a write the backend cannot apply), before
  // the batch is planned; its twin is poisoned as fail() poisons.
  void fail_one(Batch& batch, size_t i, const Status& status);
  // Fails with kFenced, before the batch is planned, each fenced write (Op::fenced_partition) not
  // failed yet whose epoch is not `current(partition)` (twins/partition.h). Returns how many it
  // failed.
  size_t fence(Batch& batch, const std::function<uint64_t(uint32_t partition)>& current);
  // Runs the batch's callbacks in sequence order, then `before_publish` (the store's listeners),
  // then moves committed_seq() past the batch and runs the commit waits it satisfies.
  void complete(Batch& batch, const std::function<void()>& before_publish = {});

 private:
  Histogram* queued_stage_ = nullptr;
  Histogram* released_stage_ = nullptr;
  // Which twins' writes must fail: a failed write poisons its twin until discard(); writes queued
  // up to the discard were made on the dropped copy and fail too. Under mu_.
  class Poisoned {
   public:
    void poison(const std::string& id) { until_[id] = kUntilDiscarded; }
    void discard(const std::string& id, uint64_t last_seq) { until_[id] = last_seq; }
    bool refuses(const std::string& id, uint64_t seq);
    void processed_up_to(uint64_t seq);

   private:
    static constexpr uint64_t kUntilDiscarded = std::numeric_limits<uint64_t>::max();
    std::unordered_map<std::string, uint64_t> until_;
  };

  // How many writes take() should wait for now, given the arrival rate (1: none to wait for).
  size_t gather_target(size_t max, std::chrono::steady_clock::time_point now);

  const size_t max_queued_;
  const std::chrono::microseconds gather_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable room_cv_;
  std::deque<Op> queue_;
  std::multimap<uint64_t, twins::CommitCallback> waiters_;
  uint64_t next_seq_ = 1;
  // Gathering (under mu_): enqueue() wakes a waiting take() when the queue reaches wake_at_; the
  // arrival rate, writes per second, averaged over the intervals between takes.
  size_t wake_at_ = 1;
  size_t urgent_queued_ = 0;  // urgent writes queued: a gathering take() does not wait for more
  double arrival_rate_ = 0;
  uint64_t seq_at_last_take_ = 1;
  std::chrono::steady_clock::time_point last_take_{};
  Poisoned poisoned_;
  bool closing_ = false;  // close() was called
  bool closed_ = false;   // and the queue drained: writes fail at once
  std::atomic<uint64_t> committed_{0};
};

}  // namespace doppel::storage
