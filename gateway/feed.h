// FeedHub: wakes the change feed's stream subscribers when the store commits new events
// (TwinStore::on_events). A subscriber that has read everything parks here with its filters; a
// commit wakes, once, each parked subscriber that one of its events matches, and each then reads
// what it is missing from the store at its own pace. Memory per subscriber does not depend on
// how far behind it is.
//
// Where a subscriber's time goes (doppel_stage_seconds): feed_wake, from the commit that wakes it
// to its read starting on the blocking pool; feed_write, from that read to its page being written
// to the client's connection.
//
// Thread-safety: all methods from any thread.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "twins/events.h"
#include "twins/metrics.h"

namespace doppel::gateway {

class FeedHub {
 public:
  using Wake = std::function<void()>;

  FeedHub() = default;
  // Registers the feed's stage histograms in `metrics`.
  explicit FeedHub(Metrics& metrics)
      : wake_stage_(
            &metrics.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"feed_wake\"")),
        write_stage_(
            &metrics.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"feed_write\"")) {}
  // Either may be null (no metrics).
  Histogram* wake_stage() const { return wake_stage_; }
  Histogram* write_stage() const { return write_stage_; }

  // `wake` runs once, on the store's writer thread, at the next commit with an event for these
  // twins (none: any) of these kinds (none: any); it must not block. Held weakly: a subscriber
  // that goes away is forgotten.
  void park(std::weak_ptr<Wake> wake, twins::EventFilter filter) {
    std::lock_guard lock(mu_);
    parked_.push_back({std::move(wake), std::move(filter)});
  }

  void notify(const std::vector<twins::EventRecord>& committed) {
    std::vector<std::weak_ptr<Wake>> woken;
    {
      std::lock_guard lock(mu_);
      std::vector<Parked> still;
      still.reserve(parked_.size());
      for (auto& p : parked_) {
        if (p.wake.expired()) continue;
        if (matches(p, committed)) {
          woken.push_back(std::move(p.wake));
        } else {
          still.push_back(std::move(p));
        }
      }
      parked_.swap(still);
    }
    for (auto& w : woken) {
      if (auto f = w.lock()) (*f)();
    }
  }

 private:
  struct Parked {
    std::weak_ptr<Wake> wake;
    twins::EventFilter filter;
  };
  static bool matches(const Parked& p, const std::vector<twins::EventRecord>& events) {
    return std::any_of(events.begin(), events.end(),
                       [&p](const twins::EventRecord& e) { return p.filter.matches(e); });
  }

  Histogram* const wake_stage_ = nullptr;
  Histogram* const write_stage_ = nullptr;
  std::mutex mu_;
  std::vector<Parked> parked_;
};

}  // namespace doppel::gateway
