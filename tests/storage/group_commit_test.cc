// The commit protocol every store shares (storage/group_commit.h), driven by hand: sequence order,
// poisoning and discard, callbacks before committed_seq() moves, commit waits, close.
#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "storage/group_commit.h"

using namespace doppel;
using storage::GroupCommitter;
using namespace std::chrono_literals;

namespace {

twins::TwinWrite of(const std::string& id) {
  twins::TwinWrite w;
  w.id = id;
  return w;
}

// A write someone waits for (an operator's request).
twins::TwinWrite urgent(const std::string& id) {
  twins::TwinWrite w = of(id);
  w.urgent = true;
  return w;
}

}  // namespace

TEST_CASE("writes are taken in sequence order, at most max per batch") {
  GroupCommitter c;
  std::vector<uint64_t> order;
  for (const char* id : {"a", "b", "c"}) {
    const uint64_t seq = c.enqueue(of(id), [&order, &c](const Status& s) {
      CHECK(s);
      order.push_back(c.committed_seq());
    });
    CHECK(seq == order.size() + c.queued());
  }
  GroupCommitter::Batch batch;
  REQUIRE(c.take(batch, 2, false));
  CHECK(batch.ops.size() == 2);
  CHECK(batch.ops[0].seq == 1);
  CHECK(batch.ops[1].seq == 2);
  c.complete(batch);
  // Every callback ran before committed_seq() covered its write.
  CHECK(order == std::vector<uint64_t>{0, 0});
  CHECK(c.committed_seq() == 2);
  REQUIRE(c.take(batch, 2, false));
  CHECK(batch.ops.size() == 1);
  c.complete(batch);
  CHECK(order == std::vector<uint64_t>{0, 0, 2});
  CHECK_FALSE(c.take(batch, 2, false));
}

TEST_CASE("a failed write poisons its twin until discard; later writes apply again") {
  GroupCommitter c;
  std::vector<std::string> outcome;
  auto record = [&outcome](const Status& s) { outcome.push_back(s ? "ok" : s.message()); };
  c.enqueue(of("t"), record);
  c.enqueue(of("u"), record);
  GroupCommitter::Batch batch;
  REQUIRE(c.take(batch, 10, false));
  c.fail(batch, Status(StatusCode::kUnavailable, "disk full"));
  c.complete(batch);
  CHECK(outcome == std::vector<std::string>{"disk full", "disk full"});

  c.enqueue(of("t"), record);  // made on top of the failed change
  REQUIRE(c.take(batch, 10, false));
  CHECK_FALSE(batch.statuses[0]);
  CHECK(batch.statuses[0].message().find("failed to commit") != std::string::npos);
  c.complete(batch);

  c.enqueue(of("t"), record);  // queued before the discard: still on the dropped copy
  c.discard("t");
  c.discard("u");
  c.enqueue(of("t"), record);  // after the reload
  REQUIRE(c.take(batch, 10, false));
  CHECK_FALSE(batch.statuses[0]);
  CHECK(batch.statuses[1]);
  c.complete(batch);
}

TEST_CASE("a job-level write that fails poisons nothing") {
  GroupCommitter c;
  c.enqueue(twins::JobWrite{}, nullptr);
  c.enqueue(of("t"), nullptr);
  GroupCommitter::Batch batch;
  REQUIRE(c.take(batch, 10, false));
  REQUIRE(batch.ops.size() == 2);
  CHECK(batch.ops[0].twin() == nullptr);
  // The job write fails alone (as a store's savepoint would have it).
  batch.statuses[0] = Status(StatusCode::kInternal, "boom");
  c.complete(batch);
  c.enqueue(twins::JobWrite{}, nullptr);
  c.enqueue(of("t"), nullptr);
  REQUIRE(c.take(batch, 10, false));
  CHECK(batch.statuses[0]);
  CHECK(batch.statuses[1]);
}

TEST_CASE("commit waits run once their write is complete, with its status") {
  GroupCommitter c;
  const uint64_t first = c.enqueue(of("a"), nullptr);
  const uint64_t second = c.enqueue(of("b"), nullptr);
  std::vector<std::string> heard;
  c.when_committed(second, [&](const Status& s) { heard.push_back("second " + s.message()); });
  c.when_committed(first, [&](const Status& s) { heard.push_back("first " + s.message()); });
  GroupCommitter::Batch batch;
  REQUIRE(c.take(batch, 1, false));
  bool published_before_waits = false;
  c.complete(batch, [&] { published_before_waits = heard.empty(); });
  CHECK(published_before_waits);
  CHECK(heard == std::vector<std::string>{"first "});
  REQUIRE(c.take(batch, 1, false));
  c.fail(batch, Status(StatusCode::kUnavailable, "gone"));
  c.complete(batch);
  CHECK(heard == std::vector<std::string>{"first ", "second gone"});
  // Already covered: runs inline.
  bool inline_ran = false;
  c.when_committed(first, [&](const Status&) { inline_ran = true; });
  CHECK(inline_ran);
}

TEST_CASE("close drains the queue, then writes fail at once; flush waits for a committer") {
  GroupCommitter c(/*max_queued=*/2);
  std::vector<Status> statuses;
  std::thread committer([&] {
    GroupCommitter::Batch batch;
    while (c.take(batch, 1, true)) c.complete(batch);
  });
  for (int i = 0; i < 5; ++i) {  // more than max_queued: enqueue waits for room
    c.enqueue(of("t" + std::to_string(i)), [&statuses](const Status& s) { statuses.push_back(s); });
  }
  c.flush();
  CHECK(statuses.size() == 5);
  CHECK(c.committed_seq() == 5);
  c.close();
  committer.join();
  c.enqueue(of("late"), [&statuses](const Status& s) { statuses.push_back(s); });
  REQUIRE(statuses.size() == 6);
  CHECK(statuses.back().code() == StatusCode::kUnavailable);
}

// Gathering (GroupCommitter's `gather`): the window is ten seconds here, so a take() that waited
// for it when it should not have shows up as a hang, and one that gathers returns only when the
// writes it waits for are queued.
TEST_CASE(
    "under a stream a batch gathers the writes expected within its window; a lone write is "
    "taken at once") {
  GroupCommitter c(1000, std::chrono::seconds(10));
  GroupCommitter::Batch batch;
  auto take_async = [&c, &batch](size_t max) {
    return std::async(std::launch::async, [&c, &batch, max] { return c.take(batch, max, true); });
  };

  // A first write, with no stream before it: no rate, nothing to wait for.
  c.enqueue(of("a"), {});
  auto first = take_async(64);
  REQUIRE(first.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(first.get());
  CHECK(batch.ops.size() == 1);
  c.complete(batch);

  // Ten writes at once: a stream far above two per window. The next take waits for as many as
  // fit (max 32), and returns as soon as the last of them is queued.
  for (int i = 0; i < 10; ++i) c.enqueue(of("s" + std::to_string(i)), {});
  auto gathered = take_async(32);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (c.gathering_for() == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  REQUIRE(c.gathering_for() == 32);
  for (int i = 10; i < 32; ++i) {
    CHECK(gathered.wait_for(std::chrono::milliseconds(0)) == std::future_status::timeout);
    c.enqueue(of("s" + std::to_string(i)), {});
  }
  REQUIRE(gathered.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(gathered.get());
  CHECK(batch.ops.size() == 32);
  CHECK(batch.ops.front().seq == 2);
  c.complete(batch);

  // A write someone waits for ends a gathering take at once, with what is queued...
  for (int i = 0; i < 3; ++i) c.enqueue(of("u" + std::to_string(i)), {});
  auto hurried = take_async(32);
  while (c.gathering_for() == 0 && std::chrono::steady_clock::now() < give_up + 5s) {
    std::this_thread::yield();
  }
  REQUIRE(c.gathering_for() > 4);
  c.enqueue(urgent("operator"), {});
  REQUIRE(hurried.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(hurried.get());
  REQUIRE(batch.ops.size() == 4);
  CHECK(batch.ops.back().twin()->id == "operator");
  c.complete(batch);
  // ...and one queued before the take keeps it from gathering at all (the stream's rate alone
  // would have it wait: the case above).
  c.enqueue(of("v0"), {});
  c.enqueue(urgent("operator-2"), {});
  auto at_once = take_async(32);
  REQUIRE(at_once.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(at_once.get());
  CHECK(batch.ops.size() == 2);
  CHECK(c.gathering_for() == 0);
  c.complete(batch);

  // close() ends a gathering take at once, with what is queued.
  c.enqueue(of("late"), {});
  c.enqueue(of("later"), {});
  auto closing = take_async(32);
  while (c.gathering_for() == 0 && std::chrono::steady_clock::now() < give_up + 5s) {
    std::this_thread::yield();
  }
  CHECK(c.gathering_for() > 2);
  c.close();
  REQUIRE(closing.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(closing.get());
  CHECK(batch.ops.size() == 2);
  c.complete(batch);
}

TEST_CASE("without a gathering window a take never waits for more writes") {
  GroupCommitter c(1000);
  GroupCommitter::Batch batch;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) c.enqueue(of("w" + std::to_string(i)), {});
    REQUIRE(c.take(batch, 64, true));
    CHECK(c.gathering_for() == 0);
    CHECK(batch.ops.size() == 5);
    c.complete(batch);
  }
}
