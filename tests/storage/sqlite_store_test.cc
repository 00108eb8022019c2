// The SQLite store on a real file, what is its own (DESIGN §8): migrations, durability across
// reopen, listing, pruning and gaps, job writes in savepoints, the indexed state columns. What
// every store promises is in store_contract_test.cc, which runs over SQLite too.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <random>

#include "storage/sqlite/sqlite_store.h"
#include "tests/support/store_rows.h"
#include "tests/support/temp_dir.h"
#include "twins/query.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::event;
using doppel::testing::row;
using doppel::testing::TempDir;
using doppel::testing::write_and_wait;
using storage::SqliteTwinStore;
using storage::StoreOptions;

namespace {

std::unique_ptr<SqliteTwinStore> open_store(const std::string& path, Metrics& m) {
  StoreOptions o;
  o.path = path;
  auto s = SqliteTwinStore::open(o, m);
  REQUIRE_MESSAGE(s, s.status().to_string());
  return std::move(*s);
}

}  // namespace

TEST_CASE("an empty file is migrated to the current schema") {
  TempDir dir("doppel-store-");
  Metrics m;
  auto store = open_store(dir.file("doppel.db"), m);
  const int store_schema_version = store->schema_version();
  CHECK(store_schema_version == 7);
  store->close();
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(dir.file("doppel.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(sqlite3_column_int(st, 0) == store_schema_version);
  sqlite3_finalize(st);
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_CASE("a file from a newer doppeld is refused with a clear error") {
  TempDir dir("doppel-store-");
  sqlite3* db = nullptr;
  sqlite3_open(dir.file("doppel.db").c_str(), &db);
  sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  Metrics m;
  StoreOptions o;
  o.path = dir.file("doppel.db");
  auto s = SqliteTwinStore::open(o, m);
  REQUIRE(!s);
  CHECK(s.status().message().find("newer") != std::string::npos);
}

TEST_CASE("write, close, reopen, read back") {
  TempDir dir("doppel-store-");
  {
    Metrics m;
    auto store = open_store(dir.file("doppel.db"), m);
    TwinWrite w = row("pump-1", 3, 5000, R"({"temp":21.5})");
    w.upsert_commands.push_back({1, "c-1", "queued", std::string("\x90\x00", 2)});
    w.upsert_commands.push_back({2, "c-2", "sent", "x"});
    write_and_wait(*store, w);
    store->close();
  }
  Metrics m;
  auto store = open_store(dir.file("doppel.db"), m);
  auto got = store->load("pump-1");
  REQUIRE(got);
  REQUIRE(got->has_value());
  const StoredTwin& st = **got;
  CHECK(st.twin.version == 3);
  CHECK(st.twin.reported == R"({"temp":21.5})");
  CHECK(st.twin.body == std::string("\x00\x01\x02", 3));
  CHECK(st.twin.next_deadline == 5000);
  CHECK(st.twin.updated_at == 1003);
  REQUIRE(st.commands.size() == 2);
  CHECK(st.commands[0].id == "c-1");
  CHECK(st.commands[0].body == std::string("\x90\x00", 2));
  CHECK(st.commands[1].status == "sent");
  CHECK(!store->load("nobody")->has_value());
  CHECK(store->count().value() == 1);
}

TEST_CASE("listing pages through twins in id order") {
  TempDir dir("doppel-store-");
  Metrics m;
  auto store = open_store(dir.file("doppel.db"), m);
  for (const char* id : {"c", "a", "e", "b", "d"}) write_and_wait(*store, row(id, 1));
  auto first = store->list("", 2);
  REQUIRE(first->size() == 2);
  CHECK((*first)[0].twin.id == "a");
  CHECK((*first)[1].twin.id == "b");
  auto rest = store->list("b", 10);
  REQUIRE(rest->size() == 3);
  CHECK((*rest)[2].twin.id == "e");
}

TEST_CASE("after pruning everything, a reopened store goes on after the last seq") {
  TempDir dir("doppel-store-");
  Metrics m;
  {
    auto store = open_store(dir.file("doppel.db"), m);
    TwinWrite w = row("a", 1);
    for (Millis ts = 100; ts < 107; ++ts) w.events.push_back(event("a", "desired.updated", ts));
    write_and_wait(*store, std::move(w));  // seqs 1..7
    CHECK(*store->prune_events(1'000'000, 1000) == 7);
  }
  auto store = open_store(dir.file("doppel.db"), m);
  CHECK(store->last_event_seq() == 7);
  CHECK(store->event_bounds()->last_assigned == 7);
  TwinWrite w = row("a", 2);
  w.events = {event("a", "desired.updated", 300)};
  write_and_wait(*store, std::move(w));
  CHECK(store->events({0, 10, {}})->events.at(0).seq == 8);
}

// Regression: a job's target query that SQLite could not run failed the whole group commit, and
// device reports batched with it were never committed.
TEST_CASE("a job-level write that fails, fails alone: the writes batched with it commit") {
  TempDir dir("doppel-store-");
  Metrics m;
  auto store = open_store(dir.file("alone.db"), m);
  // Hold the writer in a callback so that what follows is queued into one batch.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> holding;
  store->write(row("hold", 1), [&holding, released](const Status&) {
    holding.set_value();
    released.wait();
  });
  holding.get_future().wait();
  store->fail_next_job_writes(1);
  std::vector<std::future<Status>> twins_done;
  std::vector<std::shared_ptr<std::promise<Status>>> promises;
  auto queue = [&](auto w) {
    auto p = std::make_shared<std::promise<Status>>();
    twins_done.push_back(p->get_future());
    store->write(std::move(w), [p](const Status& s) { p->set_value(s); });
  };
  queue(row("r-1", 1));
  JobWrite job;
  job.jobs.push_back(JobRecord{"j-1", JobStatus::kRunning, 1, 1, "{}"});
  job.events.push_back(EventRecord{0, 1, "", "job.created", 0, R"({"job":"j-1"})"});
  job.targets_job = "j-1";
  job.targets_twins = {"r-1", "r-2"};
  job.targets_at = 1;
  queue(std::move(job));
  queue(row("r-2", 1));
  release.set_value();
  CHECK(twins_done[0].get());
  CHECK(twins_done[1].get().code() == StatusCode::kUnavailable);
  CHECK(twins_done[2].get());
  CHECK(store->load("r-1").value().has_value());
  CHECK(store->load("r-2").value().has_value());
  // Nothing of the failed write is left: no job, no executions, no counts.
  CHECK_FALSE(store->job("j-1").value().has_value());
  CHECK(store->executions("j-1", std::nullopt, "", 10).value().empty());
  CHECK(store->job_counts("j-1").value().total() == 0);
  auto kinds_of_events = [&] {
    std::vector<std::string> kinds;
    auto page = store->events({0, 100, {}});
    REQUIRE(page);
    for (const auto& e : page->events) kinds.push_back(e.kind);
    return kinds;
  };
  // Nor its event (it was once written outside the savepoint and left behind).
  CHECK(kinds_of_events().empty());
  // And the next one goes through, with its event.
  JobWrite again;
  again.jobs.push_back(JobRecord{"j-1", JobStatus::kRunning, 1, 1, "{}"});
  again.events.push_back(EventRecord{0, 2, "", "job.created", 0, R"({"job":"j-1"})"});
  again.targets_job = "j-1";
  again.targets_twins = {"r-1"};
  write_and_wait(*store, std::move(again));
  CHECK(store->job_counts("j-1").value().pending == 1);
  CHECK(kinds_of_events() == std::vector<std::string>{"job.created"});
}

TEST_CASE("a write whose states did not change leaves the indexed state columns as stored") {
  TempDir dir("doppel-store-");
  Metrics m;
  auto store = open_store(dir.file("states.db"), m);
  auto with_states = [](uint64_t version, const std::string& liveness, bool changed) {
    TwinWrite w = row("s-1", version);
    w.twin->liveness = liveness;
    w.twin->connection = liveness == "fresh" ? "online" : "offline";
    w.twin->commands_queued = version;
    w.twin->states_changed = changed;
    return w;
  };
  auto ids_where = [&](const std::string& text) {
    auto where = parse_query(text);
    REQUIRE(where);
    TwinQuery q;
    q.where = where->get();
    auto page = store->query(q);
    REQUIRE(page);
    std::vector<std::string> ids;
    for (const auto& t : page->first) ids.push_back(t.twin.id);
    return ids;
  };
  const std::vector<std::string> s1 = {"s-1"};
  write_and_wait(*store, with_states(1, "fresh", true));
  write_and_wait(*store, with_states(2, "stale", false));
  // The states stay; every other column is rewritten.
  CHECK(ids_where("liveness.state = 'fresh' AND connection.state = 'online'") == s1);
  CHECK(ids_where("commands.queued = 2 AND version = 2") == s1);
  write_and_wait(*store, with_states(3, "stale", true));
  CHECK(ids_where("liveness.state = 'stale' AND connection.state = 'offline'") == s1);
}
