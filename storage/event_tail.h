// EventTail: a store's most recent committed events, in memory, in seq order, so that change-feed
// readers who keep up are served without reading the event table (EventLog::events). Every
// backend keeps one the same way: the writer appends each commit's events after the commit, the
// pruner empties it (readers use the table until it refills after the newest seq), and a read
// whose position it covers is answered from it.
//
// Thread-safe.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "twins/events.h"

namespace doppel::storage {

class EventTail {
 public:
  explicit EventTail(size_t capacity = 16384) : capacity_(capacity) {}

  // A commit's events, in seq order, after the commit.
  void append(const std::vector<twins::EventRecord>& committed);
  // Pruning may have removed some of what it holds.
  void clear();
  // The page `query` reads, when its position is covered (the events after it are all here);
  // nullopt: read the table. The tail never holds a gap: it is emptied when events are pruned.
  std::optional<twins::EventPage> page(const twins::EventQuery& query) const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<twins::EventRecord> events_;
};

}  // namespace doppel::storage
