// FailedTwins: the bookkeeping behind TwinStore's poisoning rule (ports.h), shared by the stores.
// After a write of a twin fails, its later writes must fail too until the runtime has discarded
// its in-memory copy; writes queued after the discard apply again. Not thread-safe: the store
// calls it under its own lock, asking about writes in sequence order.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>

namespace doppel::twins {

class FailedTwins {
 public:
  // A write of `id` failed: refuse its writes until discard().
  void poison(const std::string& id) { until_[id] = kUntilDiscarded; }
  // The runtime dropped `id`; `last_seq` is the last sequence handed out so far: writes up to it
  // were made on the dropped copy and fail.
  void discard(const std::string& id, uint64_t last_seq) { until_[id] = last_seq; }
  // Whether the write `seq` of `id` must fail instead of applying.
  bool refuses(const std::string& id, uint64_t seq) {
    if (until_.empty()) return false;
    auto it = until_.find(id);
    if (it == until_.end()) return false;
    if (seq <= it->second) return true;
    until_.erase(it);  // past the discard: this twin writes normally again
    return false;
  }
  // Forgets discards that every processed write is already past.
  void processed_up_to(uint64_t seq) {
    for (auto it = until_.begin(); it != until_.end();) {
      it = it->second != kUntilDiscarded && it->second <= seq ? until_.erase(it) : std::next(it);
    }
  }

 private:
  static constexpr uint64_t kUntilDiscarded = std::numeric_limits<uint64_t>::max();
  std::unordered_map<std::string, uint64_t> until_;
};

}  // namespace doppel::twins
