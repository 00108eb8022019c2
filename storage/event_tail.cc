#include "storage/event_tail.h"

#include <algorithm>

namespace doppel::storage {

void EventTail::append(const std::vector<twins::EventRecord>& committed) {
  std::lock_guard lock(mu_);
  for (const auto& e : committed) events_.push_back(e);
  while (events_.size() > capacity_) events_.pop_front();
}

void EventTail::clear() {
  std::lock_guard lock(mu_);
  events_.clear();
}

std::optional<twins::EventPage> EventTail::page(const twins::EventQuery& q) const {
  std::lock_guard lock(mu_);
  if (events_.empty() || q.after_seq + 1 < events_.front().seq) return std::nullopt;
  twins::EventPage page;
  page.from_tail = true;
  page.scanned_to = std::max(q.after_seq, events_.back().seq);
  auto it = std::upper_bound(events_.begin(), events_.end(), q.after_seq,
                             [](uint64_t seq, const twins::EventRecord& e) { return seq < e.seq; });
  for (; it != events_.end(); ++it) {
    if (page.events.size() == q.limit) {
      page.scanned_to = page.events.back().seq;
      break;
    }
    if (q.filter.matches(*it)) page.events.push_back(*it);
  }
  return page;
}

}  // namespace doppel::storage
