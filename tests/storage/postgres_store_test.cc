// The PostgreSQL store on a private server, what is its own: opening fails at once with what to
// fix (a wrong password, a missing database, a schema from a newer doppeld), migrations are
// recorded, and the server going away under writes: they fail with kUnavailable, the store says
// it is unavailable, and once the server is back it recovers by itself — every acknowledged
// write is there, and none is applied twice. What every store promises is in
// store_contract_test.cc, which runs over PostgreSQL too (store_contract_postgres_test).
#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "storage/postgres/detail/pg.h"
#include "storage/postgres/postgres_store.h"
#include "tests/support/postgres_server.h"
#include "tests/support/store_rows.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::PostgresServer;
using doppel::testing::row;
using storage::PostgresOptions;
using storage::PostgresTwinStore;

namespace {

Result<std::unique_ptr<PostgresTwinStore>> open_store(const std::string& uri, Metrics& m) {
  PostgresOptions o;
  o.uri = uri;
  return PostgresTwinStore::open(o, m);
}

}  // namespace

TEST_CASE("a wrong password, a missing database or a newer schema stop the store at open") {
  PostgresServer server("s3cret");
  Metrics m;
  auto wrong = open_store(server.uri("postgres", "doppel", "guess"), m);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.status().message().find("check the user and password") != std::string::npos);
  auto missing = open_store(server.uri("nosuchdb"), m);
  REQUIRE_FALSE(missing);
  CHECK(missing.status().message().find("create it (createdb)") != std::string::npos);

  const std::string uri = server.create_database();
  {
    auto store = open_store(uri, m);
    REQUIRE_MESSAGE(store, store.status().to_string());
  }
  auto db = storage::pg::Connection::open(uri);
  REQUIRE(db);
  auto versions = db->exec("SELECT count(*), max(version) FROM doppel_schema_migrations");
  REQUIRE(versions);
  CHECK(versions->integer(0, 0) >= 3);  // every migration recorded, once
  CHECK(versions->integer(0, 0) == versions->integer(0, 1));
  REQUIRE(db->exec("INSERT INTO doppel_schema_migrations (version) VALUES (999)"));
  auto newer = open_store(uri, m);
  REQUIRE_FALSE(newer);
  CHECK(newer.status().message().find("upgrade doppeld") != std::string::npos);
}

TEST_CASE(
    "a database of 256 partitions is migrated to 1,024: rows added, every twin re-partitioned") {
  const std::string uri = testing::shared_postgres().create_database();
  Metrics m;
  {
    auto store = open_store(uri, m);
    REQUIRE_MESSAGE(store, store.status().to_string());
    for (int i = 0; i < 50; ++i)
      testing::write_and_wait(**store, row("m" + std::to_string(i), 1, 1000 + i));
  }
  // Back to schema 5: 256 partitions, each twin's as fnv1a32(id) % 256.
  auto db = storage::pg::Connection::open(uri);
  REQUIRE(db);
  REQUIRE(db->exec("DELETE FROM doppel_partitions WHERE partition_id >= 256"));
  REQUIRE(db->exec("UPDATE twins SET partition_id = partition_id % 256"));
  REQUIRE(db->exec("DELETE FROM doppel_schema_migrations WHERE version >= 6"));
  REQUIRE(
      db->exec("ALTER TABLE doppel_nodes DROP COLUMN advertise, DROP COLUMN started_at, "
               "DROP COLUMN heartbeat_at"));
  REQUIRE(db->exec("ALTER TABLE twins DROP COLUMN dialect"));
  auto store = open_store(uri, m);
  REQUIRE_MESSAGE(store, store.status().to_string());
  CHECK(db->exec("SELECT count(*) FROM doppel_partitions")->integer(0, 0) == kPartitions);
  auto rows = db->exec("SELECT id, partition_id FROM twins ORDER BY id");
  REQUIRE(rows);
  REQUIRE(rows->size() == 50);
  for (size_t r = 0; r < rows->size(); ++r) {
    CHECK(rows->integer(r, 1) == partition_of(rows->text(r, 0)));
  }
  // Every partition was claimed at open, the new ones too.
  CHECK((*store)->epoch(kPartitions - 1) >= 1);
}

TEST_CASE("the server stopped for 5 s under writes: nothing acknowledged lost, nothing twice") {
  PostgresServer server;
  Metrics m;
  auto opened = open_store(server.create_database(), m);
  REQUIRE_MESSAGE(opened, opened.status().to_string());
  PostgresTwinStore& store = **opened;

  // Writers: each write of twin w-<k> carries version n and one event naming it; the
  // acknowledged ones are kept. A failed write poisons its twin until discarded, as the runtime
  // does when it reloads.
  std::mutex mu;
  std::map<std::string, uint64_t> acked;  // twin -> highest acknowledged version
  std::set<std::string> acked_events;
  uint64_t failed = 0;
  auto write = [&](int k, uint64_t n) {
    const std::string id = "w-" + std::to_string(k);
    TwinWrite w = row(id, n);
    EventRecord e = testing::event(id, "reported.updated", static_cast<Millis>(n));
    const std::string tag = id + "/" + std::to_string(n);
    e.body = R"({"tag":")" + tag + R"("})";
    w.events.push_back(e);
    std::promise<Status> done;
    store.write(std::move(w), [&](const Status& s) { done.set_value(s); });
    const Status s = done.get_future().get();
    std::lock_guard lock(mu);
    if (s) {
      acked[id] = std::max(acked[id], n);
      acked_events.insert(tag);
    } else {
      CHECK(s.code() == StatusCode::kUnavailable);
      ++failed;
      store.discard(id);
    }
    return static_cast<bool>(s);
  };
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int k = 0; k < 4; ++k) {
    writers.emplace_back([&, k] {
      for (uint64_t n = 1; !stop.load(); ++n) {
        if (!write(k, n)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  server.stop();
  const auto down_at = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(5));
  CHECK_FALSE(store.available());
  server.start();
  // Recovery without a restart: a write succeeds again (bounded wait: the backoff is 5 s at most).
  bool recovered = false;
  for (int i = 0; i < 300 && !recovered; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    recovered = store.available() && write(9, 1'000'000 + static_cast<uint64_t>(i));
  }
  CHECK(recovered);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop.store(true);
  for (auto& t : writers) t.join();
  store.flush();
  INFO("down for "
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - down_at).count()
       << " s; " << failed << " writes failed");
  CHECK(failed > 0);

  // Every acknowledged write is there: each twin at least at its highest acknowledged version.
  for (const auto& [id, version] : acked) {
    auto got = store.load(id);
    REQUIRE(got);
    REQUIRE(got->has_value());
    CHECK((*got)->twin.version >= version);
  }
  // Every acknowledged event exactly once; no event twice (seqs are unique by the table's key).
  std::map<std::string, int> seen;
  uint64_t after = 0;
  while (true) {
    auto page = store.events({after, 1000, {}});
    REQUIRE(page);
    for (const auto& e : page->events) ++seen[json::parse(e.body)["tag"].get<std::string>()];
    if (page->scanned_to == after) break;
    after = page->scanned_to;
  }
  for (const auto& tag : acked_events) CHECK_MESSAGE(seen[tag] == 1, tag);
  for (const auto& [tag, n] : seen) CHECK_MESSAGE(n == 1, tag);
}

TEST_CASE("a second doppeld on the same database fences the first: its writes land nowhere") {
  PostgresServer server;
  Metrics m1, m2;
  const std::string uri = server.create_database();
  auto first = open_store(uri, m1);
  REQUIRE_MESSAGE(first, first.status().to_string());
  auto write = [](PostgresTwinStore& store, TwinWrite w) {
    w.epoch = store.epoch(w.partition);
    std::promise<Status> done;
    store.write(std::move(w), [&](const Status& s) { done.set_value(s); });
    return done.get_future().get();
  };
  REQUIRE(write(**first, row("a", 1)));
  CHECK((*first)->available());

  auto second = open_store(uri, m2);  // claims every partition at a later epoch
  REQUIRE_MESSAGE(second, second.status().to_string());
  CHECK((*second)->epoch(partition_of("a")) > (*first)->epoch(partition_of("a")));

  const Status fenced = write(**first, row("a", 2));
  CHECK(fenced.code() == StatusCode::kFenced);
  CHECK_FALSE((*first)->available());  // /readyz says so
  CHECK((*second)->load("a")->value().twin.version == 1);

  REQUIRE(write(**second, row("a", 3)));
  CHECK((*second)->load("a")->value().twin.version == 3);
  CHECK((*second)->available());

  // Who holds the partitions is on record for an operator.
  auto db = storage::pg::Connection::open(uri);
  REQUIRE(db);
  auto owners = db->exec("SELECT count(DISTINCT owner), min(epoch) FROM doppel_partitions");
  REQUIRE(owners);
  CHECK(owners->integer(0, 0) == 1);
  CHECK(owners->integer(0, 1) == 2);
}
