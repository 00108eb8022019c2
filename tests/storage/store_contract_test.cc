// The store ports' contracts (twins/ports.h), written once and run over every implementation
// that has the port, as RocksDB runs its Env tests over every Env: ShardStore (group commit and
// its output gate, poisoning, commit waits, the deadline index) and EventLog (the change feed) on
// the in-memory double and on SQLite, and what the durable stores promise beyond (reopening,
// listing, job writes that fail alone, the indexed state columns) on SQLite; built a second time
// with DOPPEL_TEST_POSTGRES, on PostgreSQL (a private server, a fresh database per case; the plain
// pass only). Backend-specific behaviour (migrations, a server that goes away) stays in
// <backend>_store_test.cc.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "storage/sqlite/sqlite_store.h"
#ifdef DOPPEL_TEST_POSTGRES
#include "storage/postgres/postgres_store.h"
#include "tests/support/postgres_rig.h"
#endif
#include "tests/support/memory_store.h"
#include "tests/support/store_rows.h"
#include "tests/support/temp_dir.h"
#include "twins/query.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::event;
using doppel::testing::row;
using doppel::testing::write_and_wait;

namespace {

// One store under test, and how to make its next commit fail (as a full disk would).
struct MemoryRig {
  testing::MemoryTwinStore store;
  testing::MemoryTwinStore* get() { return &store; }
  void fail_next_commit() { store.fail_next_commits(1); }
};

struct SqliteRig {
  SqliteRig() { open(); }
  void open() {
    storage::StoreOptions o;
    o.path = dir.file("contract.db");
    auto s = storage::SqliteTwinStore::open(o, metrics);
    REQUIRE_MESSAGE(s, s.status().to_string());
    store = std::move(*s);
  }
  // Closes the store and opens it again where it was (what was committed must be there).
  void reopen() {
    store->close();
    store.reset();
    open();
  }
  storage::SqliteTwinStore* get() { return store.get(); }
  void fail_next_commit() { store->fail_next_commits(1); }

  testing::TempDir dir{"doppel-contract-"};
  Metrics metrics;
  std::unique_ptr<storage::SqliteTwinStore> store;
};

#ifdef DOPPEL_TEST_POSTGRES
struct PostgresRig {
  PostgresRig() { open(); }
  void open() {
    storage::PostgresOptions o;
    o.uri = uri;
    auto s = storage::PostgresTwinStore::open(o, metrics);
    REQUIRE_MESSAGE(s, s.status().to_string());
    store = std::move(*s);
  }
  void reopen() {
    store->close();
    store.reset();
    open();
  }
  storage::PostgresTwinStore* get() { return store.get(); }
  void fail_next_commit() { store->fail_next_commits(1); }

  std::string uri = testing::shared_postgres().create_database();  // a database per case
  Metrics metrics;
  std::unique_ptr<storage::PostgresTwinStore> store;
};
#define STORE_RIGS PostgresRig
#define DURABLE_RIGS PostgresRig
#else
#define STORE_RIGS MemoryRig, SqliteRig
#define DURABLE_RIGS SqliteRig
#endif

std::vector<std::string> kinds_of(const EventPage& p) {
  std::vector<std::string> out;
  for (const auto& e : p.events) out.push_back(e.kind);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("a commit callback runs only after the write is durable, in order", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  std::vector<uint64_t> order;
  std::mutex mu;
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 200; ++i) {
    const std::string id = "t" + std::to_string(i % 7);
    uint64_t seq = store->write(row(id, static_cast<uint64_t>(i)), [&, id](const Status& s) {
      REQUIRE(s);
      auto fresh = store->load(id);  // visible to a reader when the callback runs
      REQUIRE(fresh);
      REQUIRE(fresh->has_value());
      std::lock_guard lock(mu);
      order.push_back((*fresh)->twin.version);
    });
    seqs.push_back(seq);
  }
  store->flush();
  CHECK(std::is_sorted(seqs.begin(), seqs.end()));
  CHECK(order.size() == 200);
  CHECK(store->committed_seq() == seqs.back());
  // The last row per twin wins, even when a batch held several for it.
  for (int t = 0; t < 7; ++t) {
    auto got = store->load("t" + std::to_string(t));
    int last = 0;
    for (int i = 0; i < 200; ++i) {
      if (i % 7 == t) last = i;
    }
    CHECK((*got)->twin.version == static_cast<uint64_t>(last));
  }
}

TEST_CASE_TEMPLATE("when_committed waits for the sequence, or runs at once if it is committed", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  const uint64_t seq = store->write(row("w", 1), nullptr);
  std::promise<void> later;
  store->when_committed(seq, [&](const Status&) { later.set_value(); });
  CHECK(later.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  bool inline_ran = false;
  store->when_committed(seq, [&](const Status&) { inline_ran = true; });
  CHECK(inline_ran);
}

TEST_CASE_TEMPLATE("deleting a twin deletes its commands; command deletes are per seq", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  TwinWrite w = row("a", 1);
  w.upsert_commands = {{1, "c1", "queued", "x"}, {2, "c2", "queued", "y"}, {3, "c3", "sent", "z"}};
  write_and_wait(*store, w);
  TwinWrite prune = testing::change("a");
  prune.delete_commands = {2};
  write_and_wait(*store, prune);
  auto got = store->load("a");
  REQUIRE((*got)->commands.size() == 2);
  CHECK((*got)->commands[1].id == "c3");
  TwinWrite del = testing::change("a");
  del.delete_twin = true;
  write_and_wait(*store, del);
  CHECK(!store->load("a")->has_value());
  write_and_wait(*store, row("a", 9));  // recreated: no old commands come back
  CHECK(store->load("a")->value().commands.empty());
}

TEST_CASE_TEMPLATE("the deadline index pages through due twins in (deadline, id) order", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  for (int i = 0; i < 30; ++i) {
    write_and_wait(*store, row("d" + std::to_string(100 + i), 1, 1000 + (i % 3) * 10));
  }
  write_and_wait(*store, row("none", 1, std::nullopt));
  write_and_wait(*store, row("late", 1, 999'999));
  std::vector<DueTwin> all;
  Millis after = std::numeric_limits<Millis>::min();
  std::string after_id = "\x7f";
  while (true) {
    auto page = store->due(std::nullopt, after, after_id, 5000, 7);
    REQUIRE(page);
    for (auto& d : *page) {
      after = d.due;
      after_id = d.id;
      all.push_back(d);
    }
    if (page->size() < 7) break;
  }
  REQUIRE(all.size() == 30);
  for (size_t i = 1; i < all.size(); ++i) {
    CHECK((all[i - 1].due < all[i].due ||
           (all[i - 1].due == all[i].due && all[i - 1].id < all[i].id)));
  }
  // Strictly after a horizon: nothing at or before it comes back.
  CHECK(store->due(std::nullopt, 1010, "\x7f", 5000, 100)->size() == 10);
}

TEST_CASE_TEMPLATE("a deadline scan can be asked for some partitions only", Rig, STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  std::map<uint32_t, std::set<std::string>> by_partition;
  for (int i = 0; i < 40; ++i) {
    const std::string id = "t" + std::to_string(i);
    write_and_wait(*store, row(id, 1, 1000 + i));
    by_partition[partition_of(id)].insert(id);
  }
  REQUIRE(by_partition.size() >= 3);
  auto it = by_partition.begin();
  const uint32_t a = it->first;
  const uint32_t b = (++it)->first;
  std::set<std::string> want = by_partition[a];
  want.insert(by_partition[b].begin(), by_partition[b].end());
  auto some = store->due(std::vector<uint32_t>{a, b}, 0, "", 5000, 100);
  REQUIRE(some);
  std::set<std::string> got;
  for (const auto& d : *some) got.insert(d.id);
  CHECK(got == want);
  CHECK(store->due(std::vector<uint32_t>{}, 0, "", 5000, 100)->empty());
  CHECK(store->due(std::nullopt, 0, "", 5000, 100)->size() == 40);
}

TEST_CASE_TEMPLATE("a write under an epoch that is not its partition's current one is fenced", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  TwinWrite first = row("f-1", 1);
  first.epoch = store->epoch(first.partition);
  write_and_wait(*store, first);

  TwinWrite stale = row("f-1", 2);
  stale.epoch = store->epoch(stale.partition) + 1;  // not the current one, whichever way
  stale.events = {event("f-1", "desired.updated", 50)};
  std::promise<Status> fenced;
  store->write(std::move(stale), [&](const Status& st) { fenced.set_value(st); });
  const Status st = fenced.get_future().get();
  CHECK(st.code() == StatusCode::kFenced);
  CHECK(st.message().find("epoch") != std::string::npos);
  // Nothing of it landed: the row, and its event.
  CHECK(store->load("f-1")->value().twin.version == 1);
  CHECK(store->events({0, 10, {}})->events.empty());

  // Another twin's write in the same store commits; the fenced one, reloaded, writes again.
  TwinWrite other = row("f-2", 1);
  other.epoch = store->epoch(other.partition);
  write_and_wait(*store, other);
  store->discard("f-1");
  TwinWrite again = row("f-1", 3);
  again.epoch = store->epoch(again.partition);
  write_and_wait(*store, again);
  CHECK(store->load("f-1")->value().twin.version == 3);
}

TEST_CASE_TEMPLATE("concurrent writers and readers see consistent committed rows", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!stop.load()) {
      auto r = store->load("hot");
      if (!r) bad.fetch_add(1);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i)
        store->write(row(t == 0 ? "hot" : "w" + std::to_string(i), 1), nullptr);
    });
  }
  for (auto& w : writers) w.join();
  store->flush();
  stop.store(true);
  reader.join();
  CHECK(bad.load() == 0);
  CHECK(store->count().value() == 301);
}

TEST_CASE_TEMPLATE("after a failed commit a twin's later writes fail until it is discarded", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  write_and_wait(*store, row("p-1", 1));
  write_and_wait(*store, row("q-1", 1));

  rig.fail_next_commit();
  std::promise<Status> failed;
  store->write(row("p-1", 2), [&](const Status& st) { failed.set_value(st); });
  CHECK(failed.get_future().get().code() == StatusCode::kUnavailable);
  // A write made on top of the failed one fails too, and never reaches the table.
  std::promise<Status> on_top;
  store->write(row("p-1", 3), [&](const Status& st) { on_top.set_value(st); });
  CHECK(on_top.get_future().get().code() == StatusCode::kUnavailable);
  auto before = store->load("p-1");
  REQUIRE(before);
  CHECK((*before)->twin.version == 1);
  write_and_wait(*store, row("q-1", 2));  // other twins are unaffected

  store->discard("p-1");
  write_and_wait(*store, row("p-1", 2));
  auto p = store->load("p-1");
  REQUIRE(p);
  CHECK((*p)->twin.version == 2);
  auto q = store->load("q-1");
  REQUIRE(q);
  CHECK((*q)->twin.version == 2);
}

TEST_CASE_TEMPLATE("events are stored with their write, in order; a failed commit stores none", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  std::atomic<uint64_t> notified{0};
  std::atomic<size_t> notified_events{0};
  store->on_events([&](uint64_t last, const std::vector<EventRecord>& committed) {
    notified = last;
    notified_events += committed.size();
  });
  TwinWrite a = row("a", 1);
  a.events = {event("a", "twin.created", 10), event("a", "desired.updated", 10)};
  write_and_wait(*store, std::move(a));
  TwinWrite b = row("b", 1);
  b.events = {event("b", "command.changed", 11)};
  write_and_wait(*store, std::move(b));
  store->flush();  // the listener runs after the write's callback, before flush() returns
  CHECK(notified == 3);
  CHECK(notified_events == 3);
  CHECK(store->last_event_seq() == 3);

  auto all = store->events({0, 100, {}});
  REQUIRE(all);
  REQUIRE(all->events.size() == 3);
  CHECK(all->events[0].seq == 1);
  CHECK(all->events[2].seq == 3);
  CHECK(kinds_of(*all) ==
        std::vector<std::string>{"twin.created", "desired.updated", "command.changed"});
  CHECK(all->scanned_to == 3);
  auto of_b = store->events({0, 100, {{"b"}, {}}});
  REQUIRE(of_b);
  CHECK(kinds_of(*of_b) == std::vector<std::string>{"command.changed"});
  CHECK(of_b->scanned_to == 3);  // looked at everything: continue after the newest
  auto twin_kinds = store->events({0, 100, {{}, {"twin.*", "command.changed"}}});
  REQUIRE(twin_kinds);
  CHECK(kinds_of(*twin_kinds) == std::vector<std::string>{"twin.created", "command.changed"});
  auto after = store->events({2, 1, {}});
  REQUIRE(after);
  CHECK(after->events.size() == 1);
  CHECK(after->events[0].seq == 3);

  // A commit that fails stores neither the row nor its events, and burns no seq.
  rig.fail_next_commit();
  TwinWrite c = row("c", 1);
  c.events = {event("c", "twin.created", 12)};
  std::promise<Status> failed;
  store->write(std::move(c), [&](const Status& s) { failed.set_value(s); });
  CHECK(!failed.get_future().get());
  store->discard("c");
  CHECK(store->events({0, 100, {}})->events.size() == 3);
  TwinWrite d = row("d", 1);
  d.events = {event("d", "twin.created", 13)};
  write_and_wait(*store, std::move(d));
  CHECK(store->events({3, 100, {}})->events.at(0).seq == 4);
}

TEST_CASE_TEMPLATE("pruning: oldest first, reported events capped, and a seq is never reused", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  TwinWrite w = row("a", 1);
  w.events = {event("a", "desired.updated", 100)};
  for (Millis ts = 101; ts <= 105; ++ts) w.events.push_back(event("a", "reported.updated", ts));
  w.events.push_back(event("a", "command.changed", 200));
  write_and_wait(*store, std::move(w));  // seqs 1..7

  // Older than 101: the first event only.
  auto pruned = store->prune_events(101, 1000);
  REQUIRE(pruned);
  CHECK(*pruned == 1);
  // At most two reported.updated: the three oldest of the five go; the others stay.
  pruned = store->prune_events(0, 2);
  REQUIRE(pruned);
  CHECK(*pruned == 3);
  auto left = store->events({0, 100, {}});
  REQUIRE(left);
  CHECK(kinds_of(*left) ==
        std::vector<std::string>{"reported.updated", "reported.updated", "command.changed"});
  CHECK(left->events.front().seq == 5);
  auto bounds = store->event_bounds();
  REQUIRE(bounds);
  CHECK(bounds->oldest == 5);
  CHECK(bounds->newest == 7);
  // Everything goes; the sequence goes on.
  CHECK(*store->prune_events(1'000'000, 1000) == 3);
  bounds = store->event_bounds();
  CHECK(bounds->oldest == 0);
  CHECK(bounds->last_assigned == 7);
  TwinWrite next = row("a", 2);
  next.events = {event("a", "desired.updated", 300)};
  write_and_wait(*store, std::move(next));
  CHECK(store->events({0, 10, {}})->events.at(0).seq == 8);
}

// Regression: the cap removed reported events from the middle of the retained log and a reader
// resuming before them got seqs 4, 6, 7, 207... with no word of what was missing.
TEST_CASE_TEMPLATE("events the reported cap removes from inside the log are reported as gaps", Rig,
                   STORE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  TwinWrite w = row("a", 1);
  w.events = {event("a", "desired.updated", 100)};  // seq 1
  for (Millis ts = 101; ts <= 103; ++ts) w.events.push_back(event("a", "command.changed", ts));
  for (Millis ts = 200; ts < 500; ++ts) w.events.push_back(event("a", "reported.updated", ts));
  w.events.push_back(event("a", "desired.updated", 600));  // seq 305
  write_and_wait(*store, std::move(w));
  REQUIRE(store->last_event_seq() == 305);
  // 300 reported events, 100 kept: seqs 5..204 go, and with them the reader's continuity.
  REQUIRE(*store->prune_events(0, 100) == 200);
  auto page = store->events({3, 100, {}});
  REQUIRE(page);
  REQUIRE(page->events.size() >= 2);
  CHECK(page->events[0].seq == 4);  // the last command event; then the seqs jump
  CHECK(page->events[1].seq == 205);
  REQUIRE(page->gaps.size() == 1);
  CHECK(page->gaps[0].from_seq == 5);
  CHECK(page->gaps[0].to_seq == 204);
  CHECK(page->gaps[0].count == 200);
  CHECK(page->gaps[0].kind == "reported.updated");
  // A reader that does not follow reported events is not told; one after the gap is not either.
  CHECK(store->events({3, 100, {{}, {"desired.*"}}})->gaps.empty());
  CHECK(store->events({3, 100, {{}, {"reported.updated"}}})->gaps.size() == 1);
  CHECK(store->events({204, 100, {}})->gaps.empty());
  // Inside the gap: still told.
  CHECK(store->events({100, 100, {}})->gaps.size() == 1);
  // Once retention by age has removed everything up to the gap's end, 410 says it instead.
  REQUIRE(*store->prune_events(500, 1000) > 0);
  auto bounds = store->event_bounds();
  REQUIRE(bounds);
  CHECK(bounds->oldest >= 205);
  CHECK(store->events({3, 100, {}})->gaps.empty());
}

// ---- What the durable stores promise beyond the double: reopening, listing, jobs. ----

TEST_CASE_TEMPLATE("write, close, reopen, read back", Rig, DURABLE_RIGS) {
  Rig rig;
  {
    auto* store = rig.get();
    TwinWrite w = row("pump-1", 3, 5000, R"({"temp":21.5})");
    w.upsert_commands.push_back({1, "c-1", "queued", std::string("\x90\x00", 2)});
    w.upsert_commands.push_back({2, "c-2", "sent", "x"});
    write_and_wait(*store, w);
  }
  rig.reopen();
  auto* store = rig.get();
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

TEST_CASE_TEMPLATE("listing pages through twins in id order", Rig, DURABLE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  for (const char* id : {"c", "a", "e", "b", "d"}) write_and_wait(*store, row(id, 1));
  auto first = store->list("", 2);
  REQUIRE(first->size() == 2);
  CHECK((*first)[0].twin.id == "a");
  CHECK((*first)[1].twin.id == "b");
  auto rest = store->list("b", 10);
  REQUIRE(rest->size() == 3);
  CHECK((*rest)[2].twin.id == "e");
}

TEST_CASE_TEMPLATE("after pruning everything, a reopened store goes on after the last seq", Rig,
                   DURABLE_RIGS) {
  Rig rig;
  {
    auto* store = rig.get();
    TwinWrite w = row("a", 1);
    for (Millis ts = 100; ts < 107; ++ts) w.events.push_back(event("a", "desired.updated", ts));
    write_and_wait(*store, std::move(w));  // seqs 1..7
    CHECK(*store->prune_events(1'000'000, 1000) == 7);
  }
  rig.reopen();
  auto* store = rig.get();
  CHECK(store->last_event_seq() == 7);
  CHECK(store->event_bounds()->last_assigned == 7);
  TwinWrite w = row("a", 2);
  w.epoch = store->epoch(w.partition);  // a reopened store may hold a later one
  w.events = {event("a", "desired.updated", 300)};
  write_and_wait(*store, std::move(w));
  CHECK(store->events({0, 10, {}})->events.at(0).seq == 8);
}

// Regression (SQLite): a job's target query that SQLite could not run failed the whole group
// commit, and device reports batched with it were never committed.
TEST_CASE_TEMPLATE("a job-level write that fails, fails alone: the writes batched with it commit",
                   Rig, DURABLE_RIGS) {
  Rig rig;
  auto* store = rig.get();
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

// A cluster's job-level writes carry their job's partition and epoch (twins/record.h): a former
// owner's write neither ends the job nor adds its event; the current owner's does.
TEST_CASE_TEMPLATE("a job-level write under a stale epoch of its partition is fenced", Rig,
                   DURABLE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  const uint32_t p = partition_of("j-f");
  JobWrite created;
  created.jobs.push_back(JobRecord{"j-f", JobStatus::kRunning, 1, 1, "{}"});
  created.targets_job = "j-f";
  created.targets_twins = {"a", "b"};
  created.targets_at = 1;
  created.partition = p;
  created.epoch = store->epoch(p);
  write_and_wait(*store, std::move(created));

  JobWrite stale;
  stale.jobs.push_back(JobRecord{"j-f", JobStatus::kCancelled, 1, 2, "{}"});
  stale.events.push_back(EventRecord{0, 2, "", "job.changed", 0, R"({"job":"j-f"})"});
  stale.cancel_pending_job = "j-f";
  stale.cancel_detail = "the job was cancelled";
  stale.targets_at = 2;
  stale.partition = p;
  stale.epoch = store->epoch(p) + 1;  // not the current one
  std::promise<Status> fenced;
  store->write(std::move(stale), [&](const Status& st) { fenced.set_value(st); });
  const Status st = fenced.get_future().get();
  CHECK(st.code() == StatusCode::kFenced);
  CHECK(st.message().find("partition " + std::to_string(p)) != std::string::npos);
  CHECK(store->job("j-f").value().value().status == JobStatus::kRunning);
  CHECK(store->job_counts("j-f").value().pending == 2);
  CHECK(store->events({0, 10, {}})->events.empty());

  JobWrite current;
  current.jobs.push_back(JobRecord{"j-f", JobStatus::kCancelled, 1, 3, "{}"});
  current.cancel_pending_job = "j-f";
  current.cancel_detail = "the job was cancelled";
  current.targets_at = 3;
  current.partition = p;
  current.epoch = store->epoch(p);
  write_and_wait(*store, std::move(current));
  CHECK(store->job("j-f").value().value().status == JobStatus::kCancelled);
  CHECK(store->job_counts("j-f").value().cancelled == 2);
}

TEST_CASE_TEMPLATE("a write whose states did not change leaves the indexed state columns as stored",
                   Rig, DURABLE_RIGS) {
  Rig rig;
  auto* store = rig.get();
  auto with_states = [](uint64_t version, const std::string& liveness, bool changed) {
    TwinWrite w = row("s-1", version);
    w.twin->next_deadline = static_cast<Millis>(version) * 1000;
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
  auto stored_deadline = [&] {
    auto loaded = store->load("s-1");
    REQUIRE(loaded);
    REQUIRE(loaded->has_value());
    return (*loaded)->twin.next_deadline;
  };
  // The states and the deadline stay; every other column is rewritten.
  CHECK(ids_where("liveness.state = 'fresh' AND connection.state = 'online'") == s1);
  CHECK(ids_where("commands.queued = 2 AND version = 2") == s1);
  CHECK(stored_deadline() == 1000);
  write_and_wait(*store, with_states(3, "stale", true));
  CHECK(ids_where("liveness.state = 'stale' AND connection.state = 'offline'") == s1);
  CHECK(stored_deadline() == 3000);
}
