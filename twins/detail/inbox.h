// A multi-producer, single-consumer queue for a shard. Producers outside the runtime (MQTT, HTTP,
// the deadline scanner) respect a soft capacity and wait while the inbox is full, which pushes
// back on the broker connection; the runtime's own posts (commit callbacks) never wait, so the
// writer thread can never deadlock against a shard.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

namespace doppel::twins::detail {

template <typename T>
class Inbox {
 public:
  explicit Inbox(size_t capacity) : capacity_(capacity) {}

  void push(T item, bool wait_if_full) {
    std::unique_lock lock(mu_);
    if (wait_if_full) {
      not_full_.wait(lock, [&] { return items_.size() < capacity_ || closed_; });
    }
    items_.push_back(std::move(item));
    times_.push_back(std::chrono::steady_clock::now());
    if (items_.size() == 1) not_empty_.notify_one();
  }

  // Moves every queued item into `out` (which it clears first). Waits until `deadline` if there
  // is none. Returns false when nothing arrived.
  // With `times`, also when each was pushed (same order).
  bool pop_all(std::vector<T>& out, std::chrono::steady_clock::time_point deadline,
               std::vector<std::chrono::steady_clock::time_point>* times = nullptr) {
    out.clear();
    std::unique_lock lock(mu_);
    not_empty_.wait_until(lock, deadline, [&] { return !items_.empty() || wake_; });
    wake_ = false;
    if (items_.empty()) return false;
    out.swap(items_);
    if (times != nullptr) {
      times->clear();
      times->swap(times_);
    } else {
      times_.clear();
    }
    not_full_.notify_all();
    return true;
  }

  // Wakes the consumer without a message.
  void wake() {
    std::lock_guard lock(mu_);
    wake_ = true;
    not_empty_.notify_one();
  }

  // Releases producers waiting for room (on shutdown).
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_one();
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return items_.size();
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::vector<T> items_;
  std::vector<std::chrono::steady_clock::time_point> times_;  // when each item was pushed
  bool wake_ = false;
  bool closed_ = false;
};

}  // namespace doppel::twins::detail
