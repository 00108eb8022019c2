// The durable command outbox (DESIGN §6), driven with explicit times: every transition, TTLs,
// retries with backoff, timeouts, idempotency, cancel, sequential and burst delivery.
#include <doctest/doctest.h>

#include "twins/twin_logic.h"

using doppel::StatusCode;
using namespace doppel::twins;

namespace {

Policy policy() {
  Policy p;
  p.command_ack_timeout_s = 10;
  p.command_max_attempts = 3;
  p.command_queue_max = 4;
  p.finished_commands_kept = 3;
  return p;
}

struct Fixture {
  explicit Fixture(Policy p = policy()) : logic(p) {
    Outcome out;
    twin = logic.create("dev-1", now, out);
  }
  TwinLogic logic;
  Millis now = 5'000'000;
  Twin twin;

  void online() {
    Outcome out;
    logic.on_status(twin, StatusMessage{true, {}, {}}, Encoding::kJson, now, out);
  }
  void offline() {
    Outcome out;
    logic.on_status(twin, StatusMessage{false, {}, {}}, Encoding::kJson, now, out);
  }
  std::string enqueue(const std::string& name, std::optional<double> ttl = {},
                      const std::string& key = {}) {
    Outcome out;
    CommandRequest r;
    r.name = name;
    r.ttl_s = ttl;
    r.idempotency_key = key;
    auto c = logic.enqueue(twin, r, now, out);
    REQUIRE(c);
    return (*c)->id;
  }
  Outcome result(const std::string& id, ResultStatus status, json result = json()) {
    Outcome out;
    logic.on_command_result(twin, id, CommandResultMessage{status, std::move(result), ""}, now,
                            out);
    return out;
  }
  Outcome alarm() {
    Outcome out;
    logic.on_alarm(twin, now, out);
    return out;
  }
  const Command& cmd(const std::string& id) {
    const Command* c = find_command(twin, id);
    REQUIRE(c != nullptr);
    return *c;
  }
  std::vector<CommandStatus> statuses(const std::string& id) {
    std::vector<CommandStatus> s;
    for (const auto& t : cmd(id).history) s.push_back(t.status);
    return s;
  }
};

std::vector<std::string> sent_ids(const Outcome& out) {
  std::vector<std::string> ids;
  for (const auto& o : out.outputs) {
    if (const auto* c = std::get_if<CommandOut>(&o)) ids.push_back(c->id);
  }
  return ids;
}

using S = CommandStatus;

}  // namespace

TEST_CASE("queued -> sent -> succeeded, with every transition recorded") {
  Fixture f;
  const std::string id = f.enqueue("reboot");
  CHECK(f.cmd(id).status == S::kQueued);  // offline: not delivered
  f.now += 100;
  f.online();
  CHECK(f.cmd(id).status == S::kSent);
  CHECK(f.cmd(id).attempts == 1);
  CHECK(f.cmd(id).ack_deadline == f.now + 10'000);
  f.now += 50;
  auto out = f.result(id, ResultStatus::kSucceeded, json{{"ok", true}});
  CHECK(f.cmd(id).status == S::kSucceeded);
  CHECK(f.cmd(id).result == json{{"ok", true}});
  CHECK(!f.cmd(id).ack_deadline);
  CHECK(f.statuses(id) == std::vector<S>{S::kQueued, S::kSent, S::kSucceeded});
  CHECK(f.cmd(id).history[1].at == f.now - 50);
  CHECK(f.cmd(id).history[2].at == f.now);
  CHECK(std::find(out.commands_changed.begin(), out.commands_changed.end(), f.cmd(id).seq) !=
        out.commands_changed.end());
}

TEST_CASE("failed and rejected results end the command with the device's error") {
  Fixture f;
  f.online();
  const std::string a = f.enqueue("a");
  Outcome out;
  f.logic.on_command_result(f.twin, a, CommandResultMessage{ResultStatus::kFailed, json(), "disk"},
                            f.now, out);
  CHECK(f.cmd(a).status == S::kFailed);
  CHECK(f.cmd(a).error == "disk");
  const std::string b = f.enqueue("b");
  f.result(b, ResultStatus::kRejected);
  CHECK(f.cmd(b).status == S::kRejected);
}

TEST_CASE("sequential delivery keeps one command in flight, in FIFO order") {
  Fixture f;
  const std::string a = f.enqueue("a");
  const std::string b = f.enqueue("b");
  const std::string c = f.enqueue("c");
  Outcome out;
  f.logic.on_status(f.twin, StatusMessage{true, {}, {}}, Encoding::kJson, f.now, out);
  CHECK(sent_ids(out) == std::vector<std::string>{a});
  CHECK(f.cmd(b).status == S::kQueued);
  out = f.result(a, ResultStatus::kSucceeded);
  CHECK(sent_ids(out) == std::vector<std::string>{b});
  out = f.result(b, ResultStatus::kFailed);
  CHECK(sent_ids(out) == std::vector<std::string>{c});
}

TEST_CASE("burst delivery sends every queued command at once") {
  Fixture f;
  TwinSettings s;
  s.command_strategy = CommandStrategy::kBurst;
  Outcome o;
  REQUIRE(f.logic.apply_settings(f.twin, s, true, f.now, o));
  const std::string a = f.enqueue("a");
  const std::string b = f.enqueue("b");
  Outcome out;
  f.logic.on_status(f.twin, StatusMessage{true, {}, {}}, Encoding::kJson, f.now, out);
  CHECK(sent_ids(out) == std::vector<std::string>{a, b});
  out = Outcome();
  CommandRequest r;
  r.name = "c";
  auto c = f.logic.enqueue(f.twin, r, f.now, out);
  REQUIRE(c);
  CHECK(sent_ids(out) == std::vector<std::string>{(*c)->id});  // sent at once while online
}

TEST_CASE("switching to burst releases the waiting commands") {
  Fixture f;
  f.online();
  f.enqueue("a");
  const std::string b = f.enqueue("b");
  CHECK(f.cmd(b).status == S::kQueued);
  TwinSettings s;
  s.command_strategy = CommandStrategy::kBurst;
  Outcome out;
  REQUIRE(f.logic.apply_settings(f.twin, s, true, f.now, out));
  CHECK(sent_ids(out) == std::vector<std::string>{b});
}

TEST_CASE("no result: re-delivered with backoff, then timed_out after max attempts") {
  Fixture f;  // ack timeout 10 s, 3 attempts
  f.online();
  const std::string id = f.enqueue("selftest");
  const Millis first = f.now;
  std::vector<Millis> deliveries = {first};
  for (int i = 0; i < 2; ++i) {
    const Millis due = *f.cmd(id).ack_deadline;
    f.now = due - 1;
    CHECK(sent_ids(f.alarm()).empty());  // never early
    f.now = due;
    CHECK(sent_ids(f.alarm()) == std::vector<std::string>{id});
    deliveries.push_back(f.now);
  }
  CHECK(deliveries == std::vector<Millis>{first, first + 10'000, first + 30'000});
  CHECK(f.cmd(id).attempts == 3);
  f.now = *f.cmd(id).ack_deadline;  // 40 s after the third delivery
  CHECK(f.now == first + 70'000);
  auto out = f.alarm();
  CHECK(sent_ids(out).empty());
  CHECK(f.cmd(id).status == S::kTimedOut);
  CHECK(f.cmd(id).error == "no result after 3 deliveries");
  CHECK(f.statuses(id) == std::vector<S>{S::kQueued, S::kSent, S::kTimedOut});
}

TEST_CASE("in_progress extends the wait without counting a delivery") {
  Fixture f;
  f.online();
  const std::string id = f.enqueue("update");
  f.now += 9'000;
  f.result(id, ResultStatus::kInProgress);
  CHECK(f.cmd(id).status == S::kSent);
  CHECK(f.cmd(id).ack_deadline == f.now + 10'000);
  f.now += 9'999;
  CHECK(sent_ids(f.alarm()).empty());
  CHECK(f.cmd(id).attempts == 1);
}

TEST_CASE("TTL expires a command while queued") {
  Fixture f;
  const std::string id = f.enqueue("reboot", 60);
  CHECK(f.cmd(id).expires_at == f.now + 60'000);
  CHECK(f.logic.next_deadline(f.twin) == f.now + 60'000);
  f.now += 59'999;
  f.alarm();
  CHECK(f.cmd(id).status == S::kQueued);
  f.now += 1;
  f.alarm();
  CHECK(f.cmd(id).status == S::kExpired);
  CHECK(f.cmd(id).error == "ttl passed while queued");
  f.online();  // an expired command is never delivered
  CHECK(f.cmd(id).attempts == 0);
}

TEST_CASE("TTL expires a command while sent, and the next one goes out") {
  Fixture f;
  f.online();
  const std::string a = f.enqueue("a", 5);
  const std::string b = f.enqueue("b");
  REQUIRE(f.cmd(a).status == S::kSent);
  f.now += 5'000;
  auto out = f.alarm();
  CHECK(f.cmd(a).status == S::kExpired);
  CHECK(f.cmd(a).error == "ttl passed while sent");
  CHECK(sent_ids(out) == std::vector<std::string>{b});
  // A late result for the expired command is ignored.
  out = f.result(a, ResultStatus::kSucceeded);
  CHECK(f.cmd(a).status == S::kExpired);
  CHECK(std::find(out.events.begin(), out.events.end(), TwinEvent::kIgnoredCommandResult) !=
        out.events.end());
}

TEST_CASE("results for unknown, queued or finished commands are ignored") {
  Fixture f;
  f.online();
  const std::string a = f.enqueue("a");
  const std::string b = f.enqueue("b");
  f.result(a, ResultStatus::kSucceeded);
  for (const std::string& id : {std::string("nope"), a}) {
    auto out = f.result(id, ResultStatus::kFailed);
    CHECK(std::find(out.events.begin(), out.events.end(), TwinEvent::kIgnoredCommandResult) !=
          out.events.end());
  }
  CHECK(f.cmd(a).status == S::kSucceeded);  // not resurrected or changed
  CHECK(f.cmd(b).status == S::kSent);
}

TEST_CASE("an idempotency key returns the first command instead of a new one") {
  Fixture f;
  const std::string a = f.enqueue("reboot", {}, "k-1");
  const std::string again = f.enqueue("reboot", {}, "k-1");
  CHECK(a == again);
  CHECK(f.twin.commands.size() == 1);
  CHECK(f.enqueue("reboot", {}, "k-2") != a);
}

TEST_CASE("the queue is capped; a full queue refuses and keeps what it holds") {
  Fixture f;  // cap 4
  for (int i = 0; i < 4; ++i) f.enqueue("c" + std::to_string(i));
  CommandRequest r;
  r.name = "overflow";
  Outcome out;
  auto c = f.logic.enqueue(f.twin, r, f.now, out);
  CHECK(c.status().code() == StatusCode::kQueueFull);
  CHECK(!out.changed());
  CHECK(f.twin.commands.size() == 4);
  // A finished command frees its place.
  f.online();
  f.result(f.twin.commands[0].id, ResultStatus::kSucceeded);
  CHECK(f.logic.enqueue(f.twin, r, f.now, out));
}

TEST_CASE("cancel ends an unfinished command and refuses a finished one") {
  Fixture f;
  f.online();
  const std::string a = f.enqueue("a");
  const std::string b = f.enqueue("b");
  Outcome out;
  REQUIRE(f.logic.cancel(f.twin, a, f.now, out));
  CHECK(f.cmd(a).status == S::kCancelled);
  CHECK(sent_ids(out) == std::vector<std::string>{b});  // the next one goes
  CHECK(f.logic.cancel(f.twin, a, f.now, out).status().code() == StatusCode::kConflict);
  CHECK(f.logic.cancel(f.twin, "nope", f.now, out).status().code() == StatusCode::kNotFound);
}

TEST_CASE("a cancel that history pruning drops at once still answers and persists the cancel") {
  Policy p = policy();
  p.finished_commands_kept = 0;  // finished commands leave memory at once
  Fixture f(p);
  const std::string a = f.enqueue("a");  // offline: stays queued
  Outcome out;
  auto cancelled = f.logic.cancel(f.twin, a, f.now, out);
  REQUIRE(cancelled);
  CHECK((*cancelled)["status"] == "cancelled");
  CHECK((*cancelled)["id"] == a);
  CHECK(find_command(f.twin, a) == nullptr);
  CHECK(out.changed());  // the removal is written, so the queued row cannot come back
  CHECK(out.commands_removed.size() == 1);
}

TEST_CASE("an ack timeout while offline waits for the birth, which re-delivers") {
  Fixture f;
  f.online();
  const std::string id = f.enqueue("a");
  f.offline();
  f.now = *f.cmd(id).ack_deadline;
  CHECK(sent_ids(f.alarm()).empty());
  CHECK(f.cmd(id).status == S::kSent);
  CHECK(f.cmd(id).attempts == 1);
  Outcome out;
  f.logic.on_status(f.twin, StatusMessage{true, {}, {}}, Encoding::kJson, f.now, out);
  CHECK(sent_ids(out) == std::vector<std::string>{id});
  CHECK(f.cmd(id).attempts == 2);
}

TEST_CASE("only the newest finished commands are kept") {
  Fixture f;  // history 3
  f.online();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(f.enqueue("c" + std::to_string(i)));
    f.result(ids.back(), ResultStatus::kSucceeded);
  }
  Outcome out;
  f.enqueue("last");
  CHECK(find_command(f.twin, ids[0]) == nullptr);
  CHECK(find_command(f.twin, ids[1]) == nullptr);
  CHECK(find_command(f.twin, ids[4]) != nullptr);
  CHECK(f.twin.commands.size() == 4);  // 3 finished + the new one
}
