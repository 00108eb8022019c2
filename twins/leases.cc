#include "twins/leases.h"

#include <algorithm>
#include <set>

namespace doppel::twins {

uint64_t rendezvous(const std::string& node, uint32_t shard) {
  // fnv1a64 over the node and the shard, then a 64-bit mix so that nearby shards spread.
  uint64_t h = 14695981039346656037ULL;
  auto add = [&](unsigned char c) {
    h ^= c;
    h *= 1099511628211ULL;
  };
  for (char c : node) add(static_cast<unsigned char>(c));
  for (int i = 0; i < 4; ++i) add(static_cast<unsigned char>(shard >> (8 * i)));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

LeaseKeeper::LeaseKeeper(LeaseTable& table, std::string node, uint32_t shards, LeaseOptions options)
    : table_(table), node_(std::move(node)), shards_(shards), options_(options) {}

void LeaseKeeper::lose(uint32_t shard) {
  held_.erase(shard);
  if (on_lost) on_lost(shard);
}

Status LeaseKeeper::tick(Millis now) {
  const Millis valid_until = now + options_.lease - options_.safety_margin;
  auto alive = table_.heartbeat(node_, options_.lease);
  if (!alive) return alive.status();

  // Renew everything held (releasing shards too: nobody may take them before they are drained).
  std::vector<HeldShard> mine;
  {
    std::lock_guard lock(mu_);
    for (const auto& [shard, h] : held_) mine.emplace_back(shard, h.epoch);
  }
  if (!mine.empty()) {
    auto renewed = table_.renew(node_, mine, options_.lease);
    if (!renewed) return renewed.status();
    const std::set<uint32_t> kept(renewed->begin(), renewed->end());
    std::lock_guard lock(mu_);
    for (const auto& [shard, epoch] : mine) {
      auto it = held_.find(shard);
      if (it == held_.end() || it->second.epoch != epoch) continue;
      if (kept.count(shard) != 0) {
        it->second.valid_until = valid_until;
      } else {
        lose(shard);
      }
    }
  }

  // The share: every live node (this one included) holds at most ceil(shards / nodes).
  const size_t nodes = std::max<size_t>(1, alive->size());
  const size_t share = (shards_ + nodes - 1) / nodes;

  // Over the share: give up the shards this node ranks lowest, each once it is drained.
  std::vector<HeldShard> to_release;
  size_t keeping = 0;
  {
    std::lock_guard lock(mu_);
    std::vector<uint32_t> ranked;
    for (const auto& [shard, h] : held_) ranked.push_back(shard);
    std::sort(ranked.begin(), ranked.end(),
              [&](uint32_t a, uint32_t b) { return rendezvous(node_, a) > rendezvous(node_, b); });
    for (size_t i = 0; i < ranked.size(); ++i) {
      Held& h = held_[ranked[i]];
      h.releasing = i >= share;  // (a shard kept again after a node left is served again)
      if (!h.releasing) ++keeping;
      if (h.releasing && (!drained || drained(ranked[i]))) {
        to_release.emplace_back(ranked[i], h.epoch);
      }
    }
  }
  if (!to_release.empty()) {
    if (Status s = table_.release(node_, to_release); !s) return s;
    std::lock_guard lock(mu_);
    for (const auto& [shard, epoch] : to_release) {
      auto it = held_.find(shard);
      if (it != held_.end() && it->second.epoch == epoch) lose(shard);
    }
  }

  // Under the share: take free or expired shards, in this node's order.
  if (keeping < share) {
    auto rows = table_.leases();
    if (!rows) return rows.status();
    std::vector<uint32_t> free;
    for (const ShardLease& l : *rows) {
      if (l.owner.empty() || l.expired) {
        std::lock_guard lock(mu_);
        if (held_.count(l.shard) == 0) free.push_back(l.shard);
      }
    }
    std::sort(free.begin(), free.end(),
              [&](uint32_t a, uint32_t b) { return rendezvous(node_, a) > rendezvous(node_, b); });
    free.resize(std::min(free.size(), share - keeping));
    if (!free.empty()) {
      auto got = table_.acquire(node_, free, options_.lease);
      if (!got) return got.status();
      std::lock_guard lock(mu_);
      for (const auto& [shard, epoch] : *got) {
        held_[shard] = Held{epoch, valid_until, false};
        if (on_acquired) on_acquired(shard, epoch);
      }
    }
  }
  return Status::ok();
}

bool LeaseKeeper::may_serve(uint32_t shard, Millis now) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(shard);
  return it != held_.end() && !it->second.releasing && now < it->second.valid_until;
}

std::optional<uint64_t> LeaseKeeper::epoch(uint32_t shard) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(shard);
  if (it == held_.end()) return std::nullopt;
  return it->second.epoch;
}

std::vector<uint32_t> LeaseKeeper::serving(Millis now) const {
  std::lock_guard lock(mu_);
  std::vector<uint32_t> out;
  for (const auto& [shard, h] : held_) {
    if (!h.releasing && now < h.valid_until) out.push_back(shard);
  }
  return out;
}

std::vector<std::pair<uint32_t, Millis>> LeaseKeeper::serving_until() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint32_t, Millis>> out;
  for (const auto& [shard, h] : held_) {
    if (!h.releasing) out.emplace_back(shard, h.valid_until);
  }
  return out;
}

Status LeaseKeeper::leave() {
  std::vector<HeldShard> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [shard, h] : held_) all.emplace_back(shard, h.epoch);
  }
  if (!all.empty()) {
    if (Status s = table_.release(node_, all); !s) return s;
  }
  {
    std::lock_guard lock(mu_);
    for (const auto& [shard, epoch] : all) lose(shard);
  }
  return table_.leave(node_);
}

}  // namespace doppel::twins
