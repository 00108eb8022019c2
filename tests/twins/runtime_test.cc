// The sharded runtime with an in-memory store, a recording channel and a fake clock: placement,
// the output gate, hibernation and wake-up, alarms of hibernated twins, store failures. The
// shards run inline on the test thread (RuntimeOptions::inline_shards): every call, delivery and
// clock advance has been fully processed when it returns, so nothing here waits or sleeps.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "tests/support/fake_channel.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_codec.h"
#include "tests/support/memory_store.h"
#include "twins/fnv1a.h"
#include "twins/runtime.h"

using doppel::Metrics;
using doppel::Result;
using doppel::StatusCode;
using doppel::testing::FakeChannel;
using doppel::testing::FakeClock;
using doppel::testing::MemoryTwinStore;
using namespace doppel::twins;

namespace {

RuntimeOptions inline_options(RuntimeOptions o) {
  o.inline_shards = true;
  return o;
}

struct Rig {
  explicit Rig(RuntimeOptions options = {}, bool auto_commit = true)
      : store(auto_commit),
        runtime(inline_options(options), store, channel, codec, clock, metrics) {
    REQUIRE(runtime.start());
  }
  ~Rig() { runtime.stop(); }

  void device(const std::string& id, InboundKind kind, const std::string& payload,
              const std::string& command_id = {}) {
    runtime.deliver(doppel::testing::device_input(id, kind, payload, command_id));
  }
  // With the auto-committing store the answer is there when call() returns.
  ApiReply call(const std::string& id, ApiRequest request) {
    auto f = runtime.call(id, std::move(request));
    REQUIRE(f.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
    return f.get();
  }
  json get(const std::string& id) {
    auto r = call(id, GetTwin{});
    REQUIRE(r.status);
    return r.body;
  }
  // Moves the fake clock; the due timers have fired when it returns.
  void advance(Millis ms) { clock.advance(ms); }

  Metrics metrics;
  FakeClock clock;
  MemoryTwinStore store;
  FakeChannel channel;
  doppel::testing::FakeCodec codec;
  Runtime runtime;
};

RuntimeOptions options(size_t shards = 2) {
  RuntimeOptions o;
  o.shards = shards;
  o.inline_shards = true;
  return o;
}

}  // namespace

TEST_CASE("a twin lives on shard fnv1a32(id) % shards") {
  Rig rig(options(3));
  for (const char* id : {"a", "pump-0042", "sensor:7"}) {
    CHECK(rig.runtime.shard_of(id) == fnv1a32(id) % 3);
  }
}

TEST_CASE("a device's first message creates its twin") {
  Rig rig;
  rig.device("pump-1", InboundKind::kReported, R"({"state":{"temp":21.5}})");
  const json doc = rig.get("pump-1");
  CHECK(doc["reported"] == json{{"temp", 21.5}});
  CHECK(doc["connection"]["state"] == "online");
  CHECK(rig.store.count().value() == 1);
}

TEST_CASE("a malformed device message gets an error and creates nothing") {
  Rig rig;
  rig.device("pump-2", InboundKind::kReported, R"({"state": [1, 2]})");
  rig.device("pump-2", InboundKind::kReported, "{broken");
  const auto errors = rig.channel.sent(OutboundKind::kError, "pump-2");
  REQUIRE(errors.size() == 2);
  const json e = json::parse(errors[0].payload);
  CHECK(e["code"] == "invalid_argument");
  CHECK(e["topic"] == "twins/pump-2/reported");
  CHECK(json::parse(errors[1].payload)["code"] == "malformed");
  CHECK(rig.call("pump-2", GetTwin{}).status.code() == StatusCode::kNotFound);
  CHECK(rig.store.count().value() == 0);
}

TEST_CASE("a rejected report changes nothing that was accepted before") {
  Rig rig;
  rig.device("pump-3", InboundKind::kReported, R"({"state":{"a":1},"token":"t1"})");
  const json before = rig.get("pump-3");
  rig.device("pump-3", InboundKind::kReported, R"({"state":{"a":"x"},"token":7})");
  rig.device("pump-3", InboundKind::kReported,
             R"({"state":{"b":)" + std::string(20000, '1') + "}}");
  CHECK(rig.get("pump-3") == before);
  CHECK(rig.channel.sent(OutboundKind::kError, "pump-3").size() == 2);
}

TEST_CASE("nothing leaves the process before the change that caused it is committed") {
  Rig rig(options(), /*auto_commit=*/false);
  rig.device("gate-1", InboundKind::kStatus, R"({"state":"online"})");
  rig.store.commit_pending();

  auto reply = rig.runtime.call("gate-1", UpdateDesired{json{{"mode", "eco"}}, false, {}});
  CHECK(rig.store.pending() == 1);
  // Inline shards: the call has run to its end, so "not ready" now is "not ready" for good.
  CHECK(reply.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
  CHECK(rig.channel.sent(OutboundKind::kDelta).empty());

  // A read of the uncommitted state waits for the same commit.
  auto read = rig.runtime.call("gate-1", GetTwin{});
  CHECK(read.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);

  rig.store.commit_pending();
  REQUIRE(reply.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(reply.get().status);
  CHECK(read.get().body["desired"] == json{{"mode", "eco"}});
  const auto deltas = rig.channel.sent(OutboundKind::kDelta, "gate-1");
  REQUIRE(deltas.size() == 1);
  CHECK(json::parse(deltas[0].payload)["state"] == json{{"mode", "eco"}});
}

TEST_CASE("a failed commit answers unavailable and the twin returns to its committed state") {
  Rig rig;
  REQUIRE(rig.call("f-1", UpdateDesired{json{{"a", 1}}, false, {}}).status);
  rig.store.fail_commits(true);
  auto r = rig.call("f-1", UpdateDesired{json{{"a", 2}}, false, {}});
  CHECK(r.status.code() == StatusCode::kUnavailable);
  rig.store.fail_commits(false);
  const json doc = rig.get("f-1");
  CHECK(doc["desired"] == json{{"a", 1}});
  CHECK(doc["desired_version"] == 1);
}

TEST_CASE("writes made on top of a failed commit fail too, and versions are never reused") {
  Rig rig(options(1), /*auto_commit=*/false);
  auto first = rig.runtime.call("f-2", UpdateDesired{json{{"a", 1}}, false, {}});
  rig.store.commit_pending();
  REQUIRE(first.get().status);
  // Two changes queued before the store answers: the second is made on top of the first.
  auto doomed = rig.runtime.call("f-2", UpdateDesired{json{{"a", 2}}, false, {}});
  auto on_top = rig.runtime.call("f-2", UpdateDesired{json{{"b", 3}}, false, {}});
  REQUIRE(rig.store.pending() == 2);
  rig.store.fail_commits(true);
  rig.store.commit_pending(1);  // only the first write, and it fails
  rig.store.fail_commits(false);
  rig.store.commit_pending();  // the second would succeed, but it carries the failed change
  CHECK(doomed.get().status.code() == StatusCode::kUnavailable);
  CHECK(on_top.get().status.code() == StatusCode::kUnavailable);
  auto stored = rig.store.load("f-2");
  REQUIRE(stored);
  REQUIRE(*stored);
  CHECK((*stored)->twin.version == 1);  // neither change reached the store
  // The twin reloads its committed state: the next change takes version 2, once.
  auto next = rig.runtime.call("f-2", UpdateDesired{json{{"c", 4}}, false, {}});
  rig.store.commit_pending();
  const ApiReply r = next.get();
  REQUIRE(r.status);
  CHECK(r.body["desired"] == json{{"a", 1}, {"c", 4}});
  CHECK(r.body["desired_version"] == 2);
  CHECK(r.body["version"] == 2);
  CHECK(rig.metrics.render().find("doppel_store_failures_total 2") != std::string::npos);
}

TEST_CASE("a read right after a failed commit never answers the uncommitted state") {
  Rig rig(options(1), /*auto_commit=*/false);
  auto first = rig.runtime.call("f-3", UpdateDesired{json{{"a", 1}}, false, {}});
  rig.store.commit_pending();
  REQUIRE(first.get().status);
  auto doomed = rig.runtime.call("f-3", UpdateDesired{json{{"a", 2}}, false, {}});
  rig.store.fail_commits(true);
  rig.store.commit_pending();
  rig.store.fail_commits(false);
  CHECK(doomed.get().status.code() == StatusCode::kUnavailable);
  auto read = rig.runtime.call("f-3", GetTwin{});
  rig.store.commit_pending();
  const ApiReply r = read.get();
  REQUIRE(r.status);
  CHECK(r.body["desired"] == json{{"a", 1}});
}

TEST_CASE("a cancelled command stays cancelled across hibernation even when pruned at once") {
  RuntimeOptions o = options(1);
  o.policy.finished_commands_kept = 0;
  o.policy.command_ack_timeout_s = 1000;
  o.command_ids = [n = 0]() mutable { return "cmd-" + std::to_string(++n); };
  o.max_hot_twins = 1;
  Rig rig(o);
  auto q = rig.call("c-1", EnqueueCommand{CommandRequest{"reboot", json::object(), {}, ""}});
  REQUIRE(q.status);
  CHECK(q.body["id"] == "cmd-1");  // the injected generator
  auto c = rig.call("c-1", CancelCommand{"cmd-1"});
  REQUIRE(c.status);
  CHECK(c.body["status"] == "cancelled");
  // Hibernate c-1 (the hot cap is one twin), then bring the device online.
  rig.device("other", InboundKind::kReported, R"({"state":{"x":1}})");
  rig.device("other", InboundKind::kReported, R"({"state":{"x":2}})");
  rig.device("c-1", InboundKind::kStatus, R"({"state":"online"})");
  CHECK(rig.channel.sent(OutboundKind::kCommand, "c-1").empty());
  auto listed = rig.call("c-1", ListCommands{});
  REQUIRE(listed.status);
  CHECK(listed.body["items"].empty());
  CHECK(rig.call("c-1", GetCommand{"cmd-1"}).status.code() == StatusCode::kNotFound);
}

TEST_CASE("an unexpected exception in a shard fails that message and the shard keeps serving") {
  struct ThrowingCodec : DeviceCodec {
    Result<DeviceMessage> decode(InboundKind kind, std::string_view payload, Wire e,
                                 const Limits& limits) const override {
      if (payload == "boom") throw std::runtime_error("codec bug");
      return wire.decode(kind, payload, e, limits);
    }
    std::string encode(const DeviceOutput& output, Wire e) const override {
      return wire.encode(output, e);
    }
    doppel::testing::FakeCodec wire;
  };
  Metrics metrics;
  FakeClock clock;
  MemoryTwinStore store;
  FakeChannel channel;
  ThrowingCodec codec;
  Runtime runtime(options(1), store, channel, codec, clock, metrics);
  REQUIRE(runtime.start());
  auto deliver = [&](const std::string& payload) {
    DeviceInput in;
    in.device_id = "x-1";
    in.kind = InboundKind::kReported;
    in.topic = "twins/x-1/reported";
    in.payload = payload;
    runtime.deliver(std::move(in));
  };
  deliver(R"({"state":{"t":1}})");
  deliver("boom");
  deliver(R"({"state":{"t":2}})");
  auto f = runtime.call("x-1", GetTwin{});
  const ApiReply r = f.get();
  REQUIRE(r.status);
  CHECK(r.body["reported"] == json{{"t", 2}});
  CHECK(metrics.render().find("doppel_shard_internal_errors_total 1") != std::string::npos);
  runtime.stop();
}

TEST_CASE("twins beyond the hot cap hibernate and wake with every field") {
  RuntimeOptions o = options(1);
  o.max_hot_twins = 3;
  Rig rig(o);
  std::vector<json> docs;
  for (int i = 0; i < 10; ++i) {
    const std::string id = "h-" + std::to_string(i);
    rig.device(id, InboundKind::kStatus, R"({"state":"online","interval_s":30})");
    rig.device(id, InboundKind::kReported, R"({"state":{"n":)" + std::to_string(i) + "}}");
    REQUIRE(rig.call(id, UpdateDesired{json{{"target", i}}, false, {}}).status);
    CHECK(rig.runtime.hot_twins() <= 3);
  }
  for (int i = 0; i < 10; ++i) docs.push_back(rig.get("h-" + std::to_string(i)));
  CHECK(rig.runtime.hot_twins() <= 3);
  for (int i = 0; i < 10; ++i) {
    const json& d = docs[static_cast<size_t>(i)];
    CHECK(d["reported"]["n"] == i);
    CHECK(d["desired"]["target"] == i);
    CHECK(d["reconcile"]["state"] == "pending");
    CHECK(d["liveness"]["stale_after_s"] == 90.0);
    CHECK(d["metadata"]["reported"]["n"]["ts"].is_number());
  }
}

TEST_CASE("idle twins hibernate after hibernate_after") {
  RuntimeOptions o = options(1);
  o.hibernate_after_s = 60;
  Rig rig(o);
  rig.device("idle-1", InboundKind::kReported, R"({"state":{"a":1}})");
  CHECK(rig.runtime.hot_twins() == 1);
  rig.advance(59'000);
  CHECK(rig.runtime.hot_twins() == 1);
  rig.advance(2'000);
  CHECK(rig.runtime.hot_twins() == 0);
  CHECK(rig.get("idle-1")["reported"]["a"] == 1);  // wakes on demand
  CHECK(rig.runtime.hot_twins() == 1);
}

TEST_CASE("an alarm of a hibernated twin fires from the deadline index, never early") {
  RuntimeOptions o = options(1);
  o.hibernate_after_s = 1;
  o.policy.default_stale_after_s = 10;
  Rig rig(o);
  rig.device("sleepy", InboundKind::kReported, R"({"state":{"a":1}})");
  rig.advance(2'000);
  REQUIRE(rig.runtime.hot_twins() == 0);
  rig.advance(7'999);  // 1 ms before the deadline
  CHECK(rig.runtime.hot_twins() == 0);
  rig.advance(1);
  const json doc = rig.get("sleepy");
  CHECK(doc["liveness"]["state"] == "stale");
}

TEST_CASE("a twin that reports often keeps its stored deadline until it passes, never early") {
  RuntimeOptions o = options(1);
  o.policy.default_stale_after_s = 10;
  bool hibernating = false;
  SUBCASE("in memory") {}
  SUBCASE("hibernated between its reports") {
    o.hibernate_after_s = 1;
    hibernating = true;
  }
  Rig rig(o);
  auto stored_deadline = [&] {
    auto row = rig.store.load("chatty");
    REQUIRE(row);
    REQUIRE(row->has_value());
    return (*row)->twin.next_deadline;
  };
  auto rendered = [&](const std::string& line) {
    return rig.metrics.render().find(line) != std::string::npos;
  };
  const Millis t0 = rig.clock.now_ms();
  rig.device("chatty", InboundKind::kReported, R"({"state":{"a":1}})");
  CHECK(stored_deadline() == t0 + 10'000);
  rig.advance(5'000);
  CHECK(rig.runtime.hot_twins() == (hibernating ? 0 : 1));
  rig.device("chatty", InboundKind::kReported, R"({"state":{"a":2}})");
  // The row keeps the earlier deadline, which has not passed: the report moves nothing indexed.
  CHECK(stored_deadline() == t0 + 10'000);
  rig.advance(2'000);
  CHECK(rig.runtime.hot_twins() == (hibernating ? 0 : 1));
  CHECK(rendered("doppel_alarm_rechecks_total 0"));
  rig.advance(3'000);  // t0 + 10 s: the stored deadline brings the twin back, nothing is due
  CHECK(rendered(hibernating ? "doppel_twin_wakes_total 2" : "doppel_twin_wakes_total 0"));
  CHECK(rendered("doppel_alarm_rechecks_total 1"));
  CHECK(rendered("doppel_alarms_fired_total 0"));
  // Its own deadline is stored now, beyond the scanner's horizon: the scanner brings it later.
  CHECK(stored_deadline() == t0 + 15'000);
  rig.advance(2'000);
  CHECK(rig.runtime.hot_twins() == (hibernating ? 0 : 1));
  rig.advance(2'999);  // 1 ms before its own deadline
  CHECK(rendered("doppel_alarms_fired_total 0"));
  rig.advance(1);  // the alarm fires by itself (no request loads the twin)
  CHECK(rendered("doppel_alarms_fired_total 1"));
  CHECK(rendered("doppel_alarms_early_total 0"));
  CHECK(rig.get("chatty")["liveness"]["state"] == "stale");
  CHECK(stored_deadline() == std::nullopt);
  rig.device("chatty", InboundKind::kReported, R"({"state":{"a":3}})");
  CHECK(stored_deadline() == t0 + 25'000);
}

TEST_CASE("alarms that fell due while the gateway was down fire at start-up") {
  Metrics metrics;
  FakeClock clock;
  MemoryTwinStore store;
  FakeChannel channel;
  doppel::testing::FakeCodec codec;
  RuntimeOptions o = options(1);
  o.policy.default_stale_after_s = 10;
  {
    Runtime rt(o, store, channel, codec, clock, metrics);
    REQUIRE(rt.start());
    DeviceInput in;
    in.device_id = "down-1";
    in.kind = InboundKind::kReported;
    in.payload = R"({"state":{"a":1}})";
    rt.deliver(in);
    rt.stop();
  }
  clock.advance(60'000);  // the gateway is down
  Metrics metrics2;
  Runtime rt(o, store, channel, codec, clock, metrics2);
  REQUIRE(rt.start());
  auto f = rt.call("down-1", GetTwin{});
  REQUIRE(f.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  CHECK(f.get().body["liveness"]["state"] == "stale");
  rt.stop();
}

TEST_CASE("deleting a twin removes it; a later message creates a fresh one") {
  Rig rig;
  rig.device("del-1", InboundKind::kReported, R"({"state":{"a":1}})");
  REQUIRE(rig.call("del-1", UpdateDesired{json{{"x", 1}}, false, {}}).status);
  CHECK(rig.call("del-1", DeleteTwin{}).kind == ReplyKind::kNoContent);
  CHECK(rig.call("del-1", GetTwin{}).status.code() == StatusCode::kNotFound);
  CHECK(rig.call("del-1", DeleteTwin{}).status.code() == StatusCode::kNotFound);
  CHECK(rig.store.count().value() == 0);
  rig.device("del-1", InboundKind::kReported, R"({"state":{"b":2}})");
  const json doc = rig.get("del-1");
  CHECK(doc["reported"] == json{{"b", 2}});
  CHECK(doc["desired"] == json::object());
}

TEST_CASE("provisioning answers 201 then 200, and PATCH of an unknown twin is 404") {
  Rig rig;
  TwinSettings s;
  s.desired = json{{"mode", "eco"}};
  CHECK(rig.call("p-1", ProvisionTwin{s}).kind == ReplyKind::kCreated);
  CHECK(rig.call("p-1", ProvisionTwin{s}).kind == ReplyKind::kOk);
  CHECK(rig.get("p-1")["desired_version"] == 1);  // same desired: no new version
  CHECK(rig.call("p-2", PatchTwin{TwinSettings{}}).status.code() == StatusCode::kNotFound);
  CHECK(rig.call("bad id", GetTwin{}).status.code() == StatusCode::kInvalidId);
}

TEST_CASE("without auto-provisioning, desired on an unknown twin is 404") {
  RuntimeOptions o = options();
  o.auto_provision = false;
  Rig rig(o);
  CHECK(rig.call("nope", UpdateDesired{json{{"a", 1}}, false, {}}).status.code() ==
        StatusCode::kNotFound);
}

TEST_CASE("with shard threads, concurrent callers are all answered in order per twin") {
  RuntimeOptions o = options(2);
  o.inline_shards = false;
  Metrics metrics;
  FakeClock clock;
  MemoryTwinStore store;
  FakeChannel channel;
  doppel::testing::FakeCodec codec;
  Runtime runtime(o, store, channel, codec, clock, metrics);
  REQUIRE(runtime.start());
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&, c] {
      for (int i = 1; i <= 50; ++i) {
        auto f = runtime.call("t-" + std::to_string(c), UpdateDesired{json{{"n", i}}, false, {}});
        // A bound that only a hang reaches.
        REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(f.get().body["desired_version"] == i);
      }
    });
  }
  for (auto& t : callers) t.join();
  runtime.stop();
  CHECK(store.count().value() == 4);
}

// ---- the change feed: what each step records, in the same write as the change -------------

namespace {

// Every stored event as JSON, oldest first.
std::vector<json> stored_events(MemoryTwinStore& store,
                                const std::vector<std::string>& kinds = {}) {
  std::vector<json> out;
  auto page = store.events({0, 10'000, {{}, kinds}});
  REQUIRE(page);
  for (const auto& e : page->events) out.push_back(event_json(e));
  return out;
}

}  // namespace

TEST_CASE("every kind of change is recorded once, with its fields, cause, version and time") {
  RuntimeOptions o = options(1);
  o.policy.default_stale_after_s = 10;
  o.policy.reconcile_timeout_s = 1000;
  Rig rig(o);
  const Millis t0 = rig.clock.now_ms();
  std::promise<ApiReply> created;
  rig.runtime.call(
      "ev-1", UpdateDesired{json{{"mode", "eco"}}, false, std::nullopt},
      [&](ApiReply r) { created.set_value(std::move(r)); },
      Cause{CauseSource::kApi, "r-1", "ops", {}, {}});
  REQUIRE(created.get_future().get().status);
  auto ev = stored_events(rig.store);
  REQUIRE(ev.size() == 3);
  CHECK(ev[0]["kind"] == "twin.created");
  CHECK(ev[1]["kind"] == "desired.updated");
  CHECK(ev[1]["patch"] == json{{"mode", "eco"}});
  CHECK(ev[1]["desired_version"] == 1);
  CHECK(ev[1]["cause"] == json{{"source", "api"}, {"request_id", "r-1"}, {"principal", "ops"}});
  CHECK(ev[1]["ts"] == t0);
  CHECK(ev[1]["version"] == 1);
  CHECK(ev[2]["kind"] == "reconcile.changed");
  CHECK(ev[2]["state"] == "pending");

  // A device report: only the leaves that changed; the same report again records nothing.
  rig.advance(5);
  rig.device("ev-1", InboundKind::kReported, R"({"state":{"mode":"eco","temp":20},"token":"k1"})");
  auto reported = stored_events(rig.store, {"reported.updated"});
  REQUIRE(reported.size() == 1);
  CHECK(reported[0]["patch"] == json{{"mode", "eco"}, {"temp", 20}});
  CHECK(reported[0]["cause"] == json{{"source", "device"}, {"token", "k1"}});
  CHECK(reported[0]["ts"] == t0 + 5);
  rig.device("ev-1", InboundKind::kReported, R"({"state":{"mode":"eco","temp":20}})");
  rig.device("ev-1", InboundKind::kReported, R"({"state":{"temp":21}})");
  reported = stored_events(rig.store, {"reported.updated"});
  REQUIRE(reported.size() == 2);
  CHECK(reported[1]["patch"] == json{{"temp", 21}});
  CHECK(reported[1]["reported_version"] == 2);
  auto conn = stored_events(rig.store, {"connection.changed"});
  REQUIRE(conn.size() == 1);
  CHECK(conn[0]["state"] == "online");
  CHECK(conn[0]["previous"] == "unknown");
  CHECK(stored_events(rig.store, {"liveness.changed"}).size() == 1);  // unknown -> fresh
  auto rec = stored_events(rig.store, {"reconcile.changed"});
  REQUIRE(rec.size() == 2);
  CHECK(rec[1]["state"] == "converged");

  // Settings, a command, an alarm (staleness), going offline, deletion.
  PatchTwin settings;
  settings.settings.tags.present = true;
  settings.settings.tags.value = json{{"site", "north"}};
  REQUIRE(rig.call("ev-1", settings).status);
  auto set = stored_events(rig.store, {"settings.updated"});
  REQUIRE(set.size() == 1);
  CHECK(set[0]["patch"] == json{{"tags", {{"site", "north"}}}});
  CommandRequest cmd;
  cmd.name = "reboot";
  REQUIRE(rig.call("ev-1", EnqueueCommand{cmd}).status);
  auto commands = stored_events(rig.store, {"command.*"});
  REQUIRE(commands.size() == 2);  // queued, then sent (the device is online)
  CHECK(commands[0]["status"] == "queued");
  CHECK(commands[0]["previous"].is_null());
  CHECK(commands[1]["status"] == "sent");
  CHECK(commands[1]["previous"] == "queued");
  CHECK(commands[1]["attempts"] == 1);
  CHECK(commands[1]["name"] == "reboot");
  rig.advance(10'000);
  auto stale = stored_events(rig.store, {"liveness.changed"});
  REQUIRE(stale.size() == 2);
  CHECK(stale[1]["state"] == "stale");
  CHECK(stale[1]["cause"]["source"] == "alarm");
  rig.device("ev-1", InboundKind::kStatus, R"({"state":"offline"})");
  CHECK(stored_events(rig.store, {"connection.changed"}).back()["state"] == "offline");
  REQUIRE(rig.call("ev-1", DeleteTwin{}).status);
  auto all = stored_events(rig.store);
  CHECK(all.back()["kind"] == "twin.deleted");
  // Sequence numbers are consecutive and timestamps never go back for the twin.
  for (size_t i = 1; i < all.size(); ++i) {
    CHECK(all[i]["seq"].get<uint64_t>() == all[i - 1]["seq"].get<uint64_t>() + 1);
    CHECK(all[i]["ts"].get<Millis>() >= all[i - 1]["ts"].get<Millis>());
  }
}

TEST_CASE("with history off, nothing is recorded") {
  RuntimeOptions o = options(1);
  o.policy.record_changes = false;
  Rig rig(o);
  REQUIRE(rig.call("quiet-1", UpdateDesired{json{{"a", 1}}, false, std::nullopt}).status);
  rig.device("quiet-1", InboundKind::kReported, R"({"state":{"a":1}})");
  CHECK(stored_events(rig.store).empty());
}
