// A cluster node's runtime (RuntimeOptions::ownership, twins/ownership.h): it applies device
// messages, answers requests and fires alarms only for the partitions it serves; a twin it held
// under an epoch it has since lost is read again when it takes the partition back; a partition it
// gains has its overdue alarms found. Two runtimes on one in-memory store play two nodes; the
// shards run inline and the clock is fake, so nothing waits.
#include <doctest/doctest.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "tests/support/fake_channel.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_codec.h"
#include "tests/support/memory_store.h"
#include "twins/partition.h"
#include "twins/runtime.h"

using doppel::Metrics;
using doppel::StatusCode;
using doppel::testing::FakeChannel;
using doppel::testing::FakeClock;
using doppel::testing::MemoryTwinStore;
using namespace doppel::twins;

namespace {

class FakeOwnership final : public Ownership {
 public:
  bool serves(uint32_t p) const override {
    std::lock_guard lock(mu_);
    return served_.count(p) > 0;
  }
  std::vector<uint32_t> serving() const override {
    std::lock_guard lock(mu_);
    return {served_.begin(), served_.end()};
  }
  std::vector<uint32_t> take_gained() override {
    std::lock_guard lock(mu_);
    std::vector<uint32_t> out;
    out.swap(gained_);
    return out;
  }
  void gain(uint32_t p) {
    std::lock_guard lock(mu_);
    served_.insert(p);
    gained_.push_back(p);
  }
  void lose(uint32_t p) {
    std::lock_guard lock(mu_);
    served_.erase(p);
  }

 private:
  mutable std::mutex mu_;
  std::set<uint32_t> served_;
  std::vector<uint32_t> gained_;
};

struct Node {
  Node(MemoryTwinStore& store, FakeClock& clock, double stale_after_s = 0)
      : runtime(options(stale_after_s), store, channel, codec, clock, metrics) {
    REQUIRE(runtime.start());
  }
  ~Node() { runtime.stop(); }
  RuntimeOptions options(double stale_after_s) {
    RuntimeOptions o;
    o.shards = 2;
    o.inline_shards = true;
    o.ownership = &ownership;
    if (stale_after_s > 0) o.policy.default_stale_after_s = stale_after_s;
    return o;
  }
  void report(const std::string& id, const std::string& state) {
    runtime.deliver(
        doppel::testing::device_input(id, InboundKind::kReported, R"({"state":)" + state + "}"));
  }
  ApiReply get(const std::string& id) {
    auto f = runtime.call(id, GetTwin{});
    REQUIRE(f.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
    return f.get();
  }

  FakeOwnership ownership;  // before the runtime, which uses it
  Metrics metrics;
  FakeChannel channel;
  doppel::testing::FakeCodec codec;
  Runtime runtime;
};

}  // namespace

TEST_CASE("a node applies device messages and answers requests only for partitions it serves") {
  FakeClock clock;
  MemoryTwinStore store;
  Node node(store, clock);
  const std::string id = "own-1";
  const uint32_t p = partition_of(id);

  node.report(id, R"({"a":1})");
  CHECK(store.count().value() == 0);  // left to the partition's owner
  CHECK(node.metrics.render().find("doppel_device_messages_foreign_total 1") != std::string::npos);
  auto refused = node.get(id);
  CHECK(refused.status.code() == StatusCode::kNotOwner);

  node.ownership.gain(p);
  node.report(id, R"({"a":1})");
  CHECK(store.count().value() == 1);
  auto got = node.get(id);
  REQUIRE(got.status);
  CHECK(got.body["reported"]["a"] == 1);

  node.ownership.lose(p);  // served from memory no longer
  CHECK(node.get(id).status.code() == StatusCode::kNotOwner);
}

TEST_CASE("a partition given up and taken back: the twin is read again, never the stale copy") {
  FakeClock clock;
  MemoryTwinStore store;
  Node a(store, clock), b(store, clock);
  const std::string id = "moving-1";
  const uint32_t p = partition_of(id);

  a.ownership.gain(p);
  a.report(id, R"({"v":1})");
  REQUIRE(a.get(id).body["reported"]["v"] == 1);  // a holds it in memory, loaded at epoch 1

  // b takes the partition at epoch 2 and changes the twin.
  a.ownership.lose(p);
  store.set_epoch(p, 2);
  b.ownership.gain(p);
  b.report(id, R"({"v":2})");
  REQUIRE(b.get(id).body["reported"]["v"] == 2);

  // a takes it back at epoch 3: its copy from epoch 1 is dropped and the twin read again.
  b.ownership.lose(p);
  store.set_epoch(p, 3);
  a.ownership.gain(p);
  auto got = a.get(id);
  REQUIRE(got.status);
  CHECK(got.body["reported"]["v"] == 2);
  a.report(id, R"({"w":3})");
  auto after = a.get(id);
  CHECK(after.body["reported"]["v"] == 2);
  CHECK(after.body["reported"]["w"] == 3);
}

TEST_CASE(
    "alarms fire only where the partition is served; a gained partition's overdue ones fire") {
  FakeClock clock;
  MemoryTwinStore store;
  Node a(store, clock, /*stale_after_s=*/10);
  const std::string id = "alarm-1";
  const uint32_t p = partition_of(id);
  a.ownership.gain(p);
  a.report(id, R"({"v":1})");
  a.ownership.lose(p);  // another node serves it (its own runtime is not in this test)

  clock.advance(30'000);  // the staleness deadline passes while a does not serve the partition
  CHECK(a.metrics.render().find("doppel_alarms_fired_total 0") != std::string::npos);

  a.ownership.gain(p);  // a takes it over: the overdue alarm is found and fires
  clock.advance(1);
  auto got = a.get(id);
  REQUIRE(got.status);
  CHECK(got.body["liveness"]["state"] == "stale");
}
