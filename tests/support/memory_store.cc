#include "tests/support/memory_store.h"

#include <algorithm>

namespace doppel::testing {

Result<std::optional<StoredTwin>> MemoryTwinStore::load(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = twins_.find(id);
  if (it == twins_.end()) return std::optional<StoredTwin>();
  return std::optional<StoredTwin>(it->second);
}

void MemoryTwinStore::apply(TwinWrite& w) {
  for (auto& e : w.events) {
    e.seq = ++last_event_seq_;
    batch_events_.push_back(e);
    events_.push_back(std::move(e));
  }
  if (w.delete_twin) {
    twins_.erase(w.id);
    return;
  }
  StoredTwin& st = twins_[w.id];
  if (w.twin) st.twin = std::move(*w.twin);
  auto& cmds = st.commands;
  for (auto& c : w.upsert_commands) {
    auto it = std::find_if(cmds.begin(), cmds.end(), [&](auto& x) { return x.seq == c.seq; });
    if (it != cmds.end()) {
      *it = std::move(c);
    } else {
      cmds.push_back(std::move(c));
    }
  }
  for (uint64_t seq : w.delete_commands) {
    cmds.erase(std::remove_if(cmds.begin(), cmds.end(), [&](auto& x) { return x.seq == seq; }),
               cmds.end());
  }
  std::sort(cmds.begin(), cmds.end(), [](auto& a, auto& b) { return a.seq < b.seq; });
}

uint64_t MemoryTwinStore::write(TwinWrite write, CommitCallback on_commit) {
  const uint64_t seq = committer_.enqueue(std::move(write), std::move(on_commit));
  if (auto_commit_) commit_pending();
  return seq;
}

void MemoryTwinStore::discard(const std::string& id) { committer_.discard(id); }

void MemoryTwinStore::commit_pending(size_t max) {
  std::lock_guard commit(commit_mu_);
  storage::GroupCommitter::Batch batch;
  if (!committer_.take(batch, max, /*wait=*/false)) return;
  committer_.fence(batch, [this](uint32_t p) { return epoch(p); });
  bool failed;
  {
    std::lock_guard lock(mu_);
    failed = fail_ || fail_next_ > 0;
    if (fail_next_ > 0) --fail_next_;
    if (!failed) {
      for (size_t i = 0; i < batch.ops.size(); ++i) {
        if (batch.statuses[i]) apply(std::get<TwinWrite>(batch.ops[i].write));
      }
    }
  }
  if (failed) committer_.fail(batch, Status(StatusCode::kUnavailable, "injected commit failure"));
  std::vector<twins::EventRecord> committed;
  {
    std::lock_guard lock(mu_);
    committed.swap(batch_events_);
  }
  committer_.complete(batch, [&] {
    if (listener_ && !committed.empty()) listener_(last_event_seq(), committed);
  });
}

void MemoryTwinStore::when_committed(uint64_t seq, CommitCallback callback) {
  committer_.when_committed(seq, std::move(callback));
}

Result<std::vector<DueTwin>> MemoryTwinStore::due(const twins::PartitionFilter& partitions,
                                                  Millis after_due, const std::string& after_id,
                                                  Millis up_to, size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<DueTwin> out;
  for (const auto& [id, st] : twins_) {
    if (!st.twin.next_deadline) continue;
    if (partitions && std::find(partitions->begin(), partitions->end(), twins::partition_of(id)) ==
                          partitions->end()) {
      continue;
    }
    const Millis d = *st.twin.next_deadline;
    if (d > up_to) continue;
    if (d < after_due || (d == after_due && id <= after_id)) continue;
    out.push_back({id, d});
  }
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return a.due != b.due ? a.due < b.due : a.id < b.id; });
  if (out.size() > limit) out.resize(limit);
  return out;
}

Result<uint64_t> MemoryTwinStore::count() {
  std::lock_guard lock(mu_);
  return static_cast<uint64_t>(twins_.size());
}

Result<std::vector<std::pair<std::string, uint64_t>>> MemoryTwinStore::command_counts() {
  std::lock_guard lock(mu_);
  std::map<std::string, uint64_t> counts;
  for (const auto& [id, st] : twins_) {
    for (const auto& c : st.commands) ++counts[c.status];
  }
  return std::vector<std::pair<std::string, uint64_t>>(counts.begin(), counts.end());
}

size_t MemoryTwinStore::pending() const { return committer_.queued(); }

void MemoryTwinStore::fail_next_commits(int n) {
  std::lock_guard lock(mu_);
  fail_next_ = n;
}

void MemoryTwinStore::fail_commits(bool fail) {
  std::lock_guard lock(mu_);
  fail_ = fail;
}

Result<twins::EventPage> MemoryTwinStore::events(const twins::EventQuery& q) {
  std::lock_guard lock(mu_);
  twins::EventPage page;
  page.scanned_to = q.after_seq;
  for (const auto& e : events_) {
    if (e.seq <= q.after_seq) continue;
    if (page.events.size() == q.limit) break;
    page.scanned_to = e.seq;
    if (q.filter.matches(e)) page.events.push_back(e);
  }
  for (const auto& g : gaps_) {
    if (g.to_seq > q.after_seq && g.from_seq <= page.scanned_to && q.filter.matches_kind(g.kind)) {
      page.gaps.push_back(g);
    }
  }
  return page;
}

Result<twins::EventBounds> MemoryTwinStore::event_bounds() {
  std::lock_guard lock(mu_);
  twins::EventBounds b;
  if (!events_.empty()) {
    b.oldest = events_.front().seq;
    b.newest = events_.back().seq;
  }
  b.last_assigned = last_event_seq_;
  return b;
}

uint64_t MemoryTwinStore::last_event_seq() const {
  std::lock_guard lock(mu_);
  return last_event_seq_;
}

Result<uint64_t> MemoryTwinStore::prune_events(Millis before_ts, uint64_t max_reported) {
  std::lock_guard lock(mu_);
  const size_t before = events_.size();
  // Oldest first: from the head of the log, while its events are older than the cut.
  size_t old = 0;
  while (old < events_.size() && events_[old].ts < before_ts) ++old;
  events_.erase(events_.begin(), events_.begin() + static_cast<ptrdiff_t>(old));
  // Then the oldest reported events beyond the cap, from inside the log: a gap readers are told.
  uint64_t reported = 0;
  for (const auto& e : events_) reported += e.kind == "reported.updated" ? 1 : 0;
  if (reported > max_reported) {
    uint64_t excess = reported - max_reported;
    twins::EventGap gap{0, 0, 0, "reported.updated"};
    std::vector<twins::EventRecord> kept;
    for (auto& e : events_) {
      if (excess > 0 && e.kind == "reported.updated") {
        --excess;
        if (gap.count++ == 0) gap.from_seq = e.seq;
        gap.to_seq = e.seq;
        continue;
      }
      kept.push_back(std::move(e));
    }
    events_ = std::move(kept);
    gaps_.push_back(gap);
  }
  // Gaps wholly before the oldest retained event are told by 410 / overflow instead.
  const uint64_t oldest = events_.empty() ? UINT64_MAX : events_.front().seq;
  gaps_.erase(std::remove_if(gaps_.begin(), gaps_.end(),
                             [oldest](const twins::EventGap& g) { return g.to_seq < oldest; }),
              gaps_.end());
  return static_cast<uint64_t>(before - events_.size());
}

}  // namespace doppel::testing
