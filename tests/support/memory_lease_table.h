// The lease table in memory, judged by an injected clock: the double the lease simulation
// (tests/twins/lease_sim_test.cc) and the lease contract test run the protocol against, with the
// semantics of PostgreSQL's (storage/postgres/lease_table.h): compare-and-set per row, expiry by
// the table's clock. Also the fence a store applies to a write: write() succeeds only at the
// shard's current epoch.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "twins/leases.h"

namespace doppel::testing {

class MemoryLeaseTable : public twins::LeaseTable {
 public:
  MemoryLeaseTable(uint32_t shards, std::function<twins::Millis()> now)
      : rows_(shards), now_(std::move(now)) {}

  Result<std::vector<std::string>> heartbeat(const std::string& node,
                                             twins::Millis lease) override {
    std::lock_guard lock(mu_);
    const twins::Millis t = now_();
    nodes_[node] = t + lease;
    std::vector<std::string> alive;
    for (const auto& [n, until] : nodes_) {
      if (until > t) alive.push_back(n);
    }
    return alive;
  }

  Result<std::vector<twins::HeldShard>> acquire(const std::string& node,
                                                const std::vector<uint32_t>& shards,
                                                twins::Millis lease) override {
    std::lock_guard lock(mu_);
    const twins::Millis t = now_();
    std::vector<twins::HeldShard> got;
    for (uint32_t s : shards) {
      Row& r = rows_.at(s);
      if (!r.owner.empty() && r.expires > t) continue;
      r.owner = node;
      r.epoch += 1;
      r.expires = t + lease;
      got.emplace_back(s, r.epoch);
    }
    return got;
  }

  Result<std::vector<uint32_t>> renew(const std::string& node,
                                      const std::vector<twins::HeldShard>& held,
                                      twins::Millis lease) override {
    std::lock_guard lock(mu_);
    const twins::Millis t = now_();
    std::vector<uint32_t> renewed;
    for (const auto& [s, epoch] : held) {
      Row& r = rows_.at(s);
      if (r.owner != node || r.epoch != epoch) continue;
      r.expires = t + lease;
      renewed.push_back(s);
    }
    return renewed;
  }

  Status release(const std::string& node, const std::vector<twins::HeldShard>& held) override {
    std::lock_guard lock(mu_);
    for (const auto& [s, epoch] : held) {
      Row& r = rows_.at(s);
      if (r.owner != node || r.epoch != epoch) continue;
      r.owner.clear();
      r.expires = 0;
    }
    return Status::ok();
  }

  Status leave(const std::string& node) override {
    std::lock_guard lock(mu_);
    nodes_.erase(node);
    return Status::ok();
  }

  Result<std::vector<twins::ShardLease>> leases() override {
    std::lock_guard lock(mu_);
    const twins::Millis t = now_();
    std::vector<twins::ShardLease> out;
    for (uint32_t s = 0; s < rows_.size(); ++s) {
      const Row& r = rows_[s];
      out.push_back({s, r.owner, r.epoch, r.owner.empty() || r.expires <= t});
    }
    return out;
  }

  // The store's fence: a write of `shard` at `epoch` lands only if that is the current epoch.
  bool write(uint32_t shard, uint64_t epoch) {
    std::lock_guard lock(mu_);
    return rows_.at(shard).epoch == epoch;
  }

  // The row as the table holds it now: (owner, epoch, expires).
  struct Row {
    std::string owner;
    uint64_t epoch = 0;
    twins::Millis expires = 0;
  };
  Row row(uint32_t shard) {
    std::lock_guard lock(mu_);
    return rows_.at(shard);
  }

 private:
  std::mutex mu_;
  std::vector<Row> rows_;
  std::map<std::string, twins::Millis> nodes_;
  std::function<twins::Millis()> now_;
};

}  // namespace doppel::testing
