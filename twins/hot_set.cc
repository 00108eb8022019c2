#include "twins/hot_set.h"

#include <algorithm>
#include <iterator>
#include <vector>

namespace doppel::twins {

HotSet::HotSet(size_t cap, Millis idle_ms, Counter& evictions)
    : cap_(std::max<size_t>(1, cap)), idle_ms_(idle_ms), evictions_(evictions) {}

HotTwin* HotSet::find(const std::string& id) {
  auto it = twins_.find(id);
  return it == twins_.end() ? nullptr : it->second.get();
}

HotTwin* HotSet::insert(Twin twin, Millis now, uint64_t committed_seq) {
  auto [it, inserted] = twins_.try_emplace(twin.id);
  if (inserted) {
    it->second = std::make_unique<HotTwin>();
    HotTwin* h = it->second.get();
    lru_.push_front(h);
    h->lru = lru_.begin();
    count_.fetch_add(1, std::memory_order_relaxed);
  }
  HotTwin* h = it->second.get();
  h->twin = std::move(twin);
  h->deleted = false;  // replaces a tombstone; its writes follow the delete in sequence
  h->last_access = now;
  touch(*h, now);
  evict_over_cap(committed_seq);
  return h;
}

void HotSet::touch(HotTwin& h, Millis now) {
  h.last_access = now;
  if (h.lru != lru_.begin()) lru_.splice(lru_.begin(), lru_, h.lru);
}

void HotSet::evict(HotTwin* h) {
  lru_.erase(h->lru);
  evictions_.inc();
  count_.fetch_sub(1, std::memory_order_relaxed);
  twins_.erase(twins_.find(h->twin.id));
}

void HotSet::evict_over_cap(uint64_t committed_seq) {
  if (twins_.size() <= cap_) return;
  std::vector<HotTwin*> victims;
  size_t remaining = twins_.size();
  for (auto it = lru_.rbegin(); it != lru_.rend() && remaining > cap_; ++it) {
    if (std::next(it) == lru_.rend()) break;          // never the newest: it is in use
    if ((*it)->last_write > committed_seq) continue;  // not durable yet
    victims.push_back(*it);
    --remaining;
  }
  for (HotTwin* h : victims) evict(h);
}

void HotSet::sweep(Millis now, uint64_t committed_seq) {
  std::vector<HotTwin*> victims;
  size_t remaining = twins_.size();
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    HotTwin* h = *it;
    const bool over = remaining > cap_;
    if (!over && now - h->last_access < idle_ms_ && !h->deleted) break;
    if (h->last_write > committed_seq) continue;  // not durable yet: the store is behind
    victims.push_back(h);
    --remaining;
  }
  for (HotTwin* h : victims) evict(h);
}

}  // namespace doppel::twins
