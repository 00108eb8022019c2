#include "storage/commit_metrics.h"

namespace doppel::storage {

CommitMetrics::CommitMetrics(Metrics& metrics, GroupCommitter& committer)
    : batch_size_(&metrics.histogram("doppel_store_commit_batch_size",
                                     "Twin writes per group commit",
                                     {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096})),
      commit_seconds_(
          &metrics.histogram("doppel_store_commit_seconds", "Time to write and commit one batch",
                             {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1})),
      writes_(&metrics.counter("doppel_store_writes_total", "Twin writes committed")),
      commits_(&metrics.counter("doppel_store_commits_total", "Group commits")),
      failures_(&metrics.counter("doppel_store_commit_failures_total", "Failed group commits")),
      events_(&metrics.counter("doppel_history_events_total",
                               "Change events committed (the change feed)")) {
  metrics.gauge_fn("doppel_store_queue_depth", "Writes waiting for the next group commit",
                   [&committer] { return static_cast<double>(committer.queued()); });
  committer.observe_stages(
      &metrics.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"commit_queue\""),
      &metrics.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"release\""));
}

void CommitMetrics::committed(size_t writes, size_t events) {
  if (events > 0) events_->inc(events);
  commits_->inc();
  writes_->inc(writes);
}

void CommitMetrics::batch(size_t writes, double seconds) {
  batch_size_->observe(static_cast<double>(writes));
  commit_seconds_->observe(seconds);
}

}  // namespace doppel::storage
