// QueryGate: each client runs at most per_client fleet queries at once; a place comes back when
// its ticket goes, and clients do not share places.
#include <doctest/doctest.h>

#include <memory>
#include <thread>
#include <vector>

#include "gateway/query_gate.h"

using doppel::gateway::QueryGate;

TEST_CASE("a client gets per_client places at once, and each back when its ticket goes") {
  QueryGate gate(2);
  auto a1 = gate.admit("ops");
  auto a2 = gate.admit("ops");
  REQUIRE(a1);
  REQUIRE(a2);
  CHECK_FALSE(gate.admit("ops"));
  // Another client has its own places.
  auto b1 = gate.admit("address 127.0.0.2");
  CHECK(b1);
  // A copy of a ticket is the same place; the place returns when the last copy goes.
  auto copy = a1;
  a1.reset();
  CHECK_FALSE(gate.admit("ops"));
  copy.reset();
  auto a3 = gate.admit("ops");
  CHECK(a3);
  CHECK_FALSE(gate.admit("ops"));
}

TEST_CASE("places are counted exactly under concurrent admits and releases") {
  QueryGate gate(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&gate] {
      for (int i = 0; i < 2000; ++i) {
        auto ticket = gate.admit("shared");
        (void)ticket;
      }
    });
  }
  for (auto& t : threads) t.join();
  // Every ticket went: all three places are free again, and no fourth.
  std::vector<std::shared_ptr<void>> held;
  for (int i = 0; i < 3; ++i) held.push_back(gate.admit("shared"));
  for (const auto& h : held) CHECK(h);
  CHECK_FALSE(gate.admit("shared"));
}
