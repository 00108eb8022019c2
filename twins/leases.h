// Shard leases for a cluster of gateways on one database (issue #22; the design Temporal uses for
// its history shards and Orleans for its membership). Ownership of each virtual shard is a row in
// the database — owner, epoch, expiry by the database's clock — changed only by compare-and-set,
// so the database alone decides who owns what; no node votes and no timing is trusted for
// correctness:
//
// - Writes are fenced. A node writes a shard's twins with the epoch it acquired the shard at, and
//   the store checks that epoch inside the write's own transaction (ShardStore, kFenced): once
//   another node has taken the shard (epoch + 1), nothing the former owner still sends can land,
//   however long it was paused.
// - Beliefs expire first. A node may serve a shard (answer from memory, apply device messages,
//   fire alarms) only until its own monotonic clock passes the time it *sent* its last successful
//   renewal plus the lease minus a safety margin. The database extended the lease when it *ran*
//   that renewal, later than it was sent, so with clocks that run at the same rate (within the
//   margin over a lease) a node stops believing before the database lets another node acquire.
// - Node identities are incarnations: a restarted node is a new owner and waits for the leases of
//   its former self to expire (at most one lease), never inheriting them.
//
// LeaseTable is the port (the in-memory table in tests/support/memory_lease_table.h, PostgreSQL's
// in storage/postgres/lease_table.h); LeaseKeeper is a node's side of the protocol: heartbeats,
// renewals, rebalancing towards an even share, and the may-serve answer. It does no I/O of its own
// besides the table, takes the time from its caller, and is deterministic: the simulation in
// tests/twins/lease_sim_test.cc drives nodes through pauses, crashes and delays from a seed.
//
// Thread-safety: LeaseTable implementations are thread-safe; a LeaseKeeper is driven by one thread
// (tick), and may_serve()/epoch() may be called from others.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "twins/clock.h"
#include "twins/status.h"

namespace doppel::twins {

struct LeaseOptions {
  Millis lease = 5000;          // a lease lasts this long after its last renewal (database clock)
  Millis renew_every = 1000;    // how often tick() is meant to run
  Millis safety_margin = 1000;  // a node stops serving this long before its lease ends
};

// One shard's row as the table holds it.
struct ShardLease {
  uint32_t shard = 0;
  std::string owner;  // empty: free
  uint64_t epoch = 0;
  bool expired = true;  // by the table's clock when it was read
};

// (shard, epoch) as a node holds it.
using HeldShard = std::pair<uint32_t, uint64_t>;

// The lease table and the membership beside it, in the database. Every call is one atomic
// operation judged by the table's own clock.
class LeaseTable {
 public:
  virtual ~LeaseTable() = default;
  // Records `node` alive for `lease` from now; answers the nodes alive now, sorted.
  virtual Result<std::vector<std::string>> heartbeat(const std::string& node, Millis lease) = 0;
  // Takes each of `shards` that is free or expired, for `node`, at epoch + 1 and a lease from now
  // (compare-and-set per row); answers those taken with their new epochs.
  virtual Result<std::vector<HeldShard>> acquire(const std::string& node,
                                                 const std::vector<uint32_t>& shards,
                                                 Millis lease) = 0;
  // Extends, to `lease` from now, each lease `node` still holds at that epoch (even if it expired
  // meanwhile, as long as nobody took it); answers the shards extended.
  virtual Result<std::vector<uint32_t>> renew(const std::string& node,
                                              const std::vector<HeldShard>& held, Millis lease) = 0;
  // Frees each of `held` that `node` still holds at that epoch (the epoch stays: the next owner
  // takes epoch + 1).
  virtual Status release(const std::string& node, const std::vector<HeldShard>& held) = 0;
  // Removes `node` from the membership (a graceful leave).
  virtual Status leave(const std::string& node) = 0;
  // Every shard's row, in shard order.
  virtual Result<std::vector<ShardLease>> leases() = 0;
};

// A node's side: what it holds, until when it may serve it, and each round's work.
class LeaseKeeper {
 public:
  LeaseKeeper(LeaseTable& table, std::string node, uint32_t shards, LeaseOptions options = {});

  // One round at `now` (this node's monotonic clock, read before the round's first call to the
  // table): heartbeat; renew what it holds; forget what it lost; release what exceeds its share
  // (once `drained` says the shard has nothing in flight); acquire free or expired shards up to
  // its share, in an order of its own (rendezvous hashing, so nodes rarely race for one row).
  // A failed call leaves every belief to lapse at its own time.
  Status tick(Millis now);

  // Whether this node may serve `shard` at `now` (its monotonic clock).
  bool may_serve(uint32_t shard, Millis now) const;
  // The epoch this node holds `shard` at (also while it may no longer serve it), if any.
  std::optional<uint64_t> epoch(uint32_t shard) const;
  // The shards it may serve at `now`, in order.
  std::vector<uint32_t> serving(Millis now) const;
  // Each shard held and not being given up, with the time (this node's clock) until which it may
  // serve it: what a node copies where its threads can read it without this keeper's lock.
  std::vector<std::pair<uint32_t, Millis>> serving_until() const;
  // Gives every shard back and leaves the membership (a graceful stop, after draining).
  Status leave();

  const std::string& node() const { return node_; }

  // Before a shard is released: whether everything in flight for it is committed (default: yes).
  std::function<bool(uint32_t shard)> drained;
  // Told of each shard gained (with its epoch) and lost or given up, from tick().
  std::function<void(uint32_t shard, uint64_t epoch)> on_acquired;
  std::function<void(uint32_t shard)> on_lost;

 private:
  struct Held {
    uint64_t epoch = 0;
    Millis valid_until = 0;  // by this node's clock
    bool releasing = false;
  };
  void lose(uint32_t shard);

  LeaseTable& table_;
  const std::string node_;
  const uint32_t shards_;
  const LeaseOptions options_;
  mutable std::mutex mu_;  // held_, against readers on other threads
  std::map<uint32_t, Held> held_;
};

// A node's rendezvous weight for a shard: each node tries shards in its own order.
uint64_t rendezvous(const std::string& node, uint32_t shard);

}  // namespace doppel::twins
