// An in-memory store for tests (test-only target), in the spirit of LevelDB's memenv: the
// runtime's two ports, ShardStore and EventLog, whole and with the same contract as the SQLite
// store (tests/storage/store_contract_test.cc runs both), no disk; it keeps no history snapshots,
// which only as-of reads (FleetStore) replay; the commit protocol is the stores' own
// GroupCommitter. With auto_commit (the default) every write commits at once and its callback runs
// inline; without it writes wait until commit_pending(), so tests can observe the output gate
// holding messages back. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "storage/group_commit.h"
#include "twins/partition.h"
#include "twins/ports.h"

namespace doppel::testing {

using twins::CommitCallback;
using twins::DueTwin;
using twins::EventLog;
using twins::Millis;
using twins::ShardStore;
using twins::StoredTwin;
using twins::TwinWrite;

class MemoryTwinStore final : public ShardStore, public EventLog {
 public:
  explicit MemoryTwinStore(bool auto_commit = true) : auto_commit_(auto_commit) {}

  Result<std::optional<StoredTwin>> load(const std::string& id) override;
  uint64_t write(TwinWrite write, CommitCallback on_commit) override;
  void discard(const std::string& id) override;
  void when_committed(uint64_t seq, CommitCallback callback) override;
  uint64_t committed_seq() const override { return committer_.committed_seq(); }
  // One lease that never changes, as SQLite's — unless a test moves it (a cluster node that lost
  // or took a partition: set_epoch).
  uint64_t epoch(uint32_t partition) const override {
    const uint64_t set = epochs_[partition % twins::kPartitions].load();
    return set == 0 ? twins::kFirstEpoch : set - 1;
  }
  void set_epoch(uint32_t partition, uint64_t epoch) {
    epochs_[partition % twins::kPartitions].store(epoch + 1);
  }
  Result<std::vector<DueTwin>> due(const twins::PartitionFilter& partitions, Millis after_due,
                                   const std::string& after_id, Millis up_to,
                                   size_t limit) override;
  Result<uint64_t> count() override;
  Result<std::vector<std::pair<std::string, uint64_t>>> command_counts() override;
  void flush() override { commit_pending(); }
  Result<twins::EventPage> events(const twins::EventQuery& query) override;
  Result<twins::EventBounds> event_bounds() override;
  uint64_t last_event_seq() const override;
  void on_events(EventsListener listener) override { listener_ = std::move(listener); }
  Result<uint64_t> prune_events(Millis before_ts, uint64_t max_reported) override;
  // Commits the oldest `max` queued writes (all by default) as one batch and runs their
  // callbacks (manual mode).
  void commit_pending(size_t max = SIZE_MAX);
  size_t pending() const;
  // Makes the next commits fail (to test how the runtime handles a broken store): all of them
  // until fail_commits(false), or the next `n`.
  void fail_commits(bool fail);
  void fail_next_commits(int n);

 private:
  // epoch + 1 once set; 0: never set (kFirstEpoch).
  std::array<std::atomic<uint64_t>, twins::kPartitions> epochs_{};
  void apply(TwinWrite& w);

  const bool auto_commit_;
  storage::GroupCommitter committer_;
  std::recursive_mutex commit_mu_;  // one commit at a time, like the SQLite store's writer
  mutable std::mutex mu_;
  std::map<std::string, StoredTwin> twins_;
  bool fail_ = false;
  int fail_next_ = 0;
  std::vector<twins::EventRecord> events_;  // under mu_, in seq order
  std::vector<twins::EventGap> gaps_;       // under mu_, oldest first
  uint64_t last_event_seq_ = 0;             // under mu_
  EventsListener listener_;
  std::vector<twins::EventRecord> batch_events_;  // of the commit in progress
};

}  // namespace doppel::testing
