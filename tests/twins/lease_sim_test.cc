// A deterministic simulation of the shard lease protocol (twins/leases.h): nodes that tick late,
// pause for up to three leases, crash and come back as new incarnations, whose clocks drift, and
// whose writes reach the database long after they were decided — thousands of seeded schedules
// per run against the in-memory lease table. What must hold at every moment:
//   - belief: when a node may serve a shard, the table says it holds that shard at the epoch it
//     believes, unexpired (so a paused node never answers from memory after its lease is gone);
//   - fencing: a write lands only at the shard's current epoch, and the epochs of the writes that
//     land on a shard never go back (two owners never both write);
//   - progress: once the chaos stops, every shard is served by a live node within three leases,
//     and no node holds more than its share.
// A failing schedule prints its seed; DOPPEL_LEASE_SEED=<seed> replays that one alone.
#include <doctest/doctest.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/support/memory_lease_table.h"
#include "twins/leases.h"

using doppel::testing::MemoryLeaseTable;
using doppel::twins::LeaseKeeper;
using doppel::twins::LeaseOptions;
using doppel::twins::Millis;

namespace {

constexpr uint32_t kShards = 16;
constexpr int kNodes = 3;

struct Node {
  int index = 0;
  int incarnation = 0;
  std::unique_ptr<LeaseKeeper> keeper;
  double rate = 1.0;      // its clock's speed against the table's
  Millis offset = 0;      // and where it starts
  Millis busy_until = 0;  // paused, or waiting for an answer
  Millis next_tick = 0;
  bool crashed = false;
  Millis restart_at = 0;

  Millis clock(Millis t) const {
    return offset + static_cast<Millis>(static_cast<double>(t) * rate);
  }
};

struct PendingWrite {
  Millis at = 0;  // when it reaches the table
  std::string node;
  uint32_t shard = 0;
  uint64_t epoch = 0;
};

struct Outcome {
  std::string violation;  // empty: every property held
  int writes_landed = 0;
  int writes_fenced = 0;
};

// One schedule from `seed`. `margin` is the keeper's safety margin (the last test removes it).
Outcome run(uint64_t seed, Millis margin = 1000) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](Millis lo, Millis hi) {
    return std::uniform_int_distribution<Millis>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  Millis now = 0;
  MemoryLeaseTable table(kShards, [&] { return now; });
  LeaseOptions options;
  options.lease = 5000;
  options.renew_every = 1000;
  options.safety_margin = margin;
  std::vector<Node> nodes(kNodes);
  auto boot = [&](Node& n) {
    n.incarnation += 1;
    n.keeper = std::make_unique<LeaseKeeper>(
        table, "n" + std::to_string(n.index) + "#" + std::to_string(n.incarnation), kShards,
        options);
    n.crashed = false;
    n.rate = 1.0 + static_cast<double>(uniform(-5, 5)) / 1000.0;  // +-0.5%
    n.offset = uniform(0, 1'000'000);
    n.next_tick = now;
  };
  for (int i = 0; i < kNodes; ++i) {
    nodes[i].index = i;
    boot(nodes[i]);
  }
  Outcome out;
  std::vector<PendingWrite> pending;
  std::vector<uint64_t> last_landed(kShards, 0);

  auto check_belief = [&](const Node& n, uint32_t shard) {
    const auto row = table.row(shard);
    const auto epoch = n.keeper->epoch(shard);
    if (row.owner != n.keeper->node() || !epoch || row.epoch != *epoch || row.expires <= now) {
      out.violation = n.keeper->node() + " may serve shard " + std::to_string(shard) +
                      " at t=" + std::to_string(now) + " but the table says owner '" + row.owner +
                      "' epoch " + std::to_string(row.epoch) + " expires " +
                      std::to_string(row.expires);
    }
  };
  auto land_writes = [&] {
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->at > now) {
        ++it;
        continue;
      }
      if (table.write(it->shard, it->epoch)) {
        ++out.writes_landed;
        if (it->epoch < last_landed[it->shard]) {
          out.violation = "a write at epoch " + std::to_string(it->epoch) + " landed on shard " +
                          std::to_string(it->shard) + " after one at epoch " +
                          std::to_string(last_landed[it->shard]);
        }
        last_landed[it->shard] = it->epoch;
      } else {
        ++out.writes_fenced;
      }
      it = pending.erase(it);
    }
  };

  // The chaos: 60 simulated seconds.
  while (now < 60'000 && out.violation.empty()) {
    now += uniform(1, 150);
    land_writes();
    Node& n = nodes[static_cast<size_t>(uniform(0, kNodes - 1))];
    if (n.crashed) {
      if (now >= n.restart_at) boot(n);
      continue;
    }
    if (now < n.busy_until) continue;
    // Whatever it does next, it first looks at what it believes (e.g. answering a read).
    for (uint32_t s = 0; s < kShards; ++s) {
      if (n.keeper->may_serve(s, n.clock(now))) check_belief(n, s);
    }
    const int action = static_cast<int>(uniform(0, 99));
    if (action < 2) {  // crash: its writes in flight may still arrive
      n.crashed = true;
      n.restart_at = now + uniform(0, 3 * options.lease);
    } else if (action < 6) {  // pause (GC, SIGSTOP, a stalled VM)
      n.busy_until = now + uniform(0, 3 * options.lease);
    } else if (now >= n.next_tick && chance(0.7)) {  // (a late round may come after a write)
      (void)n.keeper->tick(n.clock(now));
      // The answers take time (rarely, a long time); the next round comes about on schedule.
      n.busy_until = now + (chance(0.05) ? uniform(0, 2 * options.lease) : uniform(0, 50));
      n.next_tick = now + options.renew_every + uniform(-200, 200);
    } else {  // serve: check its belief, and send a write that lands a little or a lot later
      const auto shard = static_cast<uint32_t>(uniform(0, kShards - 1));
      if (!n.keeper->may_serve(shard, n.clock(now))) continue;
      pending.push_back({now + (chance(0.1) ? uniform(0, 3 * options.lease) : uniform(0, 20)),
                         n.keeper->node(), shard, *n.keeper->epoch(shard)});
    }
  }
  if (!out.violation.empty()) return out;

  // Calm: everyone up, ticking on time with quick answers, for three leases.
  for (Node& n : nodes) {
    if (n.crashed) boot(n);
    n.busy_until = 0;
  }
  const Millis calm_until = now + 3 * options.lease;
  while (now < calm_until) {
    now += 100;
    land_writes();
    for (Node& n : nodes) {
      if (now >= n.next_tick) {
        (void)n.keeper->tick(n.clock(now));
        n.next_tick = now + options.renew_every;
      }
      for (uint32_t s = 0; s < kShards; ++s) {
        if (n.keeper->may_serve(s, n.clock(now))) check_belief(n, s);
      }
    }
    if (!out.violation.empty()) return out;
  }
  const size_t share = (kShards + kNodes - 1) / kNodes;
  for (uint32_t s = 0; s < kShards; ++s) {
    int servers = 0;
    for (const Node& n : nodes) servers += n.keeper->may_serve(s, n.clock(now)) ? 1 : 0;
    if (servers != 1) {
      out.violation = "after the calm, shard " + std::to_string(s) + " is served by " +
                      std::to_string(servers) + " nodes";
      return out;
    }
  }
  for (const Node& n : nodes) {
    if (n.keeper->serving(n.clock(now)).size() > share) {
      out.violation = n.keeper->node() + " serves more than its share after the calm";
    }
  }
  return out;
}

}  // namespace

TEST_CASE(
    "lease protocol: no schedule lets two nodes own a shard, and every shard is owned again") {
  uint64_t first = 1;
  int schedules = 5000;
  if (const char* s = std::getenv("DOPPEL_LEASE_SEED")) {
    first = std::strtoull(s, nullptr, 10);
    schedules = 1;
  }
  int landed = 0, fenced = 0;
  for (int i = 0; i < schedules; ++i) {
    const uint64_t seed = first + static_cast<uint64_t>(i);
    const Outcome o = run(seed);
    landed += o.writes_landed;
    fenced += o.writes_fenced;
    if (!o.violation.empty()) {
      FAIL("seed " << seed << " (replay: DOPPEL_LEASE_SEED=" << seed << "): " << o.violation);
    }
  }
  // The schedules exercised both sides of the fence.
  CHECK(landed > 0);
  CHECK(fenced > 0);
  MESSAGE(schedules << " schedules: " << landed << " writes landed, " << fenced << " fenced");
}

TEST_CASE(
    "lease protocol: without the safety margin the simulation finds a node serving too long") {
  // A keeper that believes its lease for longer than the table grants it (margin -2 s): some
  // schedule must catch a node that may serve a shard the table has let go — proof that the
  // simulation can see the failure it guards against.
  bool found = false;
  for (uint64_t seed = 1; seed <= 500 && !found; ++seed) {
    found = !run(seed, -2000).violation.empty();
  }
  CHECK(found);
}
