// CommitMetrics: what every store's group commit reports, by the same names whatever the backend
// (doppel_store_* and doppel_history_events_total), with the queue depth read from its committer.
#pragma once

#include <cstddef>

#include "storage/group_commit.h"
#include "twins/metrics.h"

namespace doppel::storage {

class CommitMetrics {
 public:
  // Also gives `committer` the doppel_stage_seconds histograms of its stages.
  CommitMetrics(Metrics& metrics, GroupCommitter& committer);

  // A batch of `writes` committed, storing `events` change events.
  void committed(size_t writes, size_t events);
  void failed() { failures_->inc(); }
  // Every batch, committed or not: its size and how long writing it took.
  void batch(size_t writes, double seconds);

 private:
  Histogram* batch_size_;
  Histogram* commit_seconds_;
  Counter* writes_;
  Counter* commits_;
  Counter* failures_;
  Counter* events_;
};

}  // namespace doppel::storage
