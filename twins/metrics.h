// Lock-free counters, gauges and histograms, and a registry that renders them as Prometheus text.
// Every module registers what it measures in the one Metrics object the gateway owns; updates
// are atomic and safe from any thread. Registration is not hot-path: do it at construction.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace doppel {

class Counter {
 public:
  void inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void set(int64_t v) { v_.store(v, std::memory_order_relaxed); }
  void add(int64_t n) { v_.fetch_add(n, std::memory_order_relaxed); }
  // Raises the value to `v` if it is lower.
  void raise_to(int64_t v) {
    int64_t cur = v_.load(std::memory_order_relaxed);
    while (cur < v && !v_.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

// Cumulative histogram with fixed upper bounds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  uint64_t bucket(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const;
  // Upper bound of the bucket holding quantile q (0..1), for summaries; 0 when empty.
  double quantile_bound(double q) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // one per bound, plus +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};
};

// doppel_stage_seconds{stage}: where an update's time goes, by stage (registered by the runtime and
// by the store's group commit under this one name and help).
inline constexpr const char* kStageMetric = "doppel_stage_seconds";
inline constexpr const char* kStageHelp =
    "Time spent per stage: inbox (a message or request waiting for its shard), step (the shard "
    "handling it), commit_queue (a write waiting for its group commit to start), release (from "
    "its commit to its effects released: replies sent, publishes handed to the broker client), "
    "feed_wake (a change-feed stream from the commit that wakes it to its read starting), "
    "feed_write (from that read to the events written to the client's connection)";
std::vector<double> stage_bounds();

class Metrics {
 public:
  // `labels` is preformatted, e.g. R"(kind="reported")"; the same name may be registered with
  // different labels and is rendered as one family.
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  Gauge& gauge(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                       const std::string& labels = "");
  // A gauge computed when scraped.
  void gauge_fn(const std::string& name, const std::string& help, std::function<double()> fn,
                const std::string& labels = "");
  std::string render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram, kGaugeFn };
  struct Entry {
    std::string name, help, labels;
    Type type;
    Counter* counter = nullptr;
    Gauge* gauge = nullptr;
    Histogram* histogram = nullptr;
    std::function<double()> fn;
  };
  mutable std::mutex mu_;
  std::deque<Counter> counters_;
  std::deque<Gauge> gauges_;
  std::deque<Histogram> histograms_;
  std::vector<Entry> entries_;
};

}  // namespace doppel
