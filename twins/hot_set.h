// HotSet: the twins one shard holds in memory, in least-recently-used order, and the rules that
// drop them (hibernation, DESIGN §2): idle for `hibernate_after`, or beyond the shard's share of
// the hot cap. A twin is never dropped before its latest write is committed; a dropped twin's
// state is in the store and its timer entries stay with the shard, so any message, request or
// alarm loads it again.
//
// Thread-safety: owned and used by one shard thread; size() may be read from any thread.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "twins/metrics.h"
#include "twins/twin.h"

namespace doppel::twins {

// A twin in memory with what its shard needs to know about it.
struct HotTwin {
  Twin twin;
  uint64_t last_write = 0;  // store sequence of this twin's latest write
  uint64_t epoch = 0;       // the ownership epoch it was loaded under (TwinWrite::epoch)
  Millis last_access = 0;
  std::optional<Millis> scheduled;  // earliest timer entry the shard holds for it
  // The next deadline its stored row holds (OutputGate: never later than the twin's own).
  std::optional<Millis> stored_deadline;
  bool deleted = false;  // tombstone until the delete is committed
  std::list<HotTwin*>::iterator lru;
};

class HotSet {
 public:
  // `cap`: twins held at most (older committed ones are dropped beyond it); `idle_ms`: a twin
  // untouched this long is dropped at the next sweep.
  HotSet(size_t cap, Millis idle_ms, Counter& evictions);

  // The twin's entry, tombstones included; nullptr when it is not in memory.
  HotTwin* find(const std::string& id);
  // Holds `twin` (replacing a tombstone of the same id) as the most recently used, then drops
  // the least recently used committed twins beyond the cap (never the new one).
  HotTwin* insert(Twin twin, Millis now, uint64_t committed_seq);
  void touch(HotTwin& h, Millis now);
  // Drops `h` from memory at once (its writes, if any are in flight, are the caller's concern).
  void evict(HotTwin* h);
  // Drops twins idle for idle_ms, tombstones, and those beyond the cap — each only once its
  // latest write is committed (`committed_seq`).
  void sweep(Millis now, uint64_t committed_seq);

  size_t size() const { return count_.load(std::memory_order_relaxed); }

 private:
  void evict_over_cap(uint64_t committed_seq);

  const size_t cap_;
  const Millis idle_ms_;
  Counter& evictions_;
  std::unordered_map<std::string, std::unique_ptr<HotTwin>> twins_;
  std::list<HotTwin*> lru_;  // front: most recently used
  std::atomic<size_t> count_{0};
};

}  // namespace doppel::twins
