// The lease table's behaviour (twins/leases.h), written once and run over each implementation:
// the in-memory table (its clock moved by the test) and, built again with DOPPEL_TEST_POSTGRES,
// PostgreSQL's (storage/postgres/lease_table.h; its server's clock, so the test waits out short
// leases for real — bounded). Then a LeaseKeeper per node over the same table: three nodes share
// the partitions evenly, and the shards of one that stops are taken by the others.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <thread>

#include "twins/leases.h"
#include "twins/partition.h"

#ifdef DOPPEL_TEST_POSTGRES
#include "storage/postgres/lease_table.h"
#include "tests/support/postgres_server.h"
#else
#include "tests/support/memory_lease_table.h"
#endif

using doppel::twins::HeldShard;
using doppel::twins::kPartitions;
using doppel::twins::LeaseKeeper;
using doppel::twins::LeaseOptions;
using doppel::twins::LeaseTable;
using doppel::twins::Millis;

namespace {

// A lease table of kPartitions rows and a way to let time pass by its clock.
struct Rig {
#ifdef DOPPEL_TEST_POSTGRES
  static constexpr Millis kLease = 400;  // real time: short, and waited out
  Rig() {
    auto t = doppel::storage::PostgresLeaseTable::open(
        doppel::testing::shared_postgres().create_database());
    REQUIRE_MESSAGE(t, t.status().to_string());
    own = std::move(*t);
    table = own.get();
  }
  void pass(Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  // A node's monotonic clock.
  Millis clock() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  std::unique_ptr<doppel::storage::PostgresLeaseTable> own;
#else
  static constexpr Millis kLease = 5000;
  Rig()
      : own(std::make_unique<doppel::testing::MemoryLeaseTable>(kPartitions,
                                                                [this] { return now; })) {
    table = own.get();
  }
  void pass(Millis ms) { now += ms; }
  Millis clock() const { return now; }  // a node's clock: the table's, moved by the test
  Millis now = 1'000'000;
  std::unique_ptr<doppel::testing::MemoryLeaseTable> own;
#endif
  LeaseTable* table = nullptr;
};

std::vector<uint32_t> shards_of(const std::vector<HeldShard>& held) {
  std::vector<uint32_t> out;
  for (const auto& [s, e] : held) out.push_back(s);
  return out;
}

}  // namespace

TEST_CASE("leases: a free shard is taken at the next epoch, once") {
  Rig rig;
  auto a = rig.table->acquire("a", {1, 2, 3}, Rig::kLease);
  REQUIRE(a);
  CHECK(shards_of(*a) == std::vector<uint32_t>{1, 2, 3});
  const uint64_t e1 = a->front().second;
  CHECK(e1 >= 1);
  // Held and unexpired: nobody else gets it, not even partly.
  auto b = rig.table->acquire("b", {2, 3, 4}, Rig::kLease);
  REQUIRE(b);
  CHECK(shards_of(*b) == std::vector<uint32_t>{4});
  auto rows = rig.table->leases();
  REQUIRE(rows);
  REQUIRE(rows->size() == kPartitions);
  CHECK((*rows)[1].owner == "a");
  CHECK((*rows)[1].epoch == e1);
  CHECK(!(*rows)[1].expired);
  CHECK((*rows)[4].owner == "b");
  CHECK((*rows)[5].owner.empty());
}

TEST_CASE(
    "leases: renewal by the holder at its epoch only; an expired lease is taken at epoch + 1") {
  Rig rig;
  auto a = rig.table->acquire("a", {7}, Rig::kLease);
  REQUIRE(a);
  REQUIRE(a->size() == 1);
  const uint64_t e = a->front().second;
  CHECK(rig.table->renew("a", {{7, e}}, Rig::kLease)->size() == 1);
  CHECK(rig.table->renew("a", {{7, e + 1}}, Rig::kLease)->empty());  // not its epoch
  CHECK(rig.table->renew("b", {{7, e}}, Rig::kLease)->empty());      // not its shard
  rig.pass(Rig::kLease + Rig::kLease / 2);
  auto rows = rig.table->leases();
  REQUIRE(rows);
  CHECK((*rows)[7].expired);
  auto b = rig.table->acquire("b", {7}, Rig::kLease);
  REQUIRE(b);
  REQUIRE(b->size() == 1);
  CHECK(b->front().second == e + 1);
  // The former holder's renewal finds the shard gone.
  CHECK(rig.table->renew("a", {{7, e}}, Rig::kLease)->empty());
}

TEST_CASE("leases: an expired lease nobody took is renewed by its holder") {
  Rig rig;
  auto a = rig.table->acquire("a", {9}, Rig::kLease);
  REQUIRE(a);
  const uint64_t e = a->front().second;
  rig.pass(Rig::kLease + Rig::kLease / 2);
  CHECK(rig.table->renew("a", {{9, e}}, Rig::kLease)->size() == 1);
  CHECK(!(*rig.table->leases())[9].expired);
}

TEST_CASE("leases: a released shard is free, and its next owner starts at epoch + 1") {
  Rig rig;
  auto a = rig.table->acquire("a", {3}, Rig::kLease);
  REQUIRE(a);
  const uint64_t e = a->front().second;
  CHECK(rig.table->release("b", {{3, e}}));  // not b's: nothing happens
  CHECK((*rig.table->leases())[3].owner == "a");
  CHECK(rig.table->release("a", {{3, e}}));
  CHECK((*rig.table->leases())[3].owner.empty());
  auto b = rig.table->acquire("b", {3}, Rig::kLease);
  REQUIRE(b);
  REQUIRE(b->size() == 1);
  CHECK(b->front().second == e + 1);
}

TEST_CASE("leases: membership by heartbeat; a node that stops beating or leaves drops out") {
  Rig rig;
  CHECK(*rig.table->heartbeat("a", Rig::kLease) == std::vector<std::string>{"a"});
  CHECK(*rig.table->heartbeat("b", Rig::kLease) == std::vector<std::string>{"a", "b"});
  rig.pass(Rig::kLease / 2);
  CHECK(*rig.table->heartbeat("c", Rig::kLease) == std::vector<std::string>{"a", "b", "c"});
  CHECK(rig.table->leave("c"));
  rig.pass(Rig::kLease / 2 + Rig::kLease / 4);
  // a and b beat half a lease and more ago... b beats again; a's lease ran out.
  CHECK(*rig.table->heartbeat("b", Rig::kLease) == std::vector<std::string>{"b"});
}

TEST_CASE("leases: keepers share the partitions evenly, and take over a stopped node's") {
  Rig rig;
  LeaseOptions o;
  o.lease = Rig::kLease;
  o.renew_every = Rig::kLease / 5;
  o.safety_margin = Rig::kLease / 5;
  std::vector<std::unique_ptr<LeaseKeeper>> nodes;
  for (const char* n : {"n1", "n2", "n3"}) {
    nodes.push_back(std::make_unique<LeaseKeeper>(*rig.table, n, kPartitions, o));
  }
  auto round = [&](size_t alive) {
    for (size_t i = 0; i < alive; ++i) REQUIRE(nodes[i]->tick(rig.clock()));
    rig.pass(o.renew_every);
  };
  for (int i = 0; i < 6; ++i) round(3);
  const size_t share = (kPartitions + 2) / 3;
  std::set<uint32_t> all;
  for (const auto& n : nodes) {
    const auto mine = n->serving(rig.clock());
    CHECK(mine.size() <= share);
    CHECK(mine.size() + 3 >= share);
    all.insert(mine.begin(), mine.end());
  }
  CHECK(all.size() == kPartitions);
  // n3 stops: within about two leases n1 and n2 serve everything between them.
  const auto lost = nodes[2]->serving(rig.clock());
  for (int i = 0; i < 12; ++i) round(2);
  all.clear();
  for (size_t i = 0; i < 2; ++i) {
    const auto mine = nodes[i]->serving(rig.clock());
    CHECK(mine.size() <= (kPartitions + 1) / 2);
    all.insert(mine.begin(), mine.end());
  }
  CHECK(all.size() == kPartitions);
  // And n3's own belief has lapsed by its clock.
  for (uint32_t s : lost) CHECK(!nodes[2]->may_serve(s, rig.clock()));
}
