// The rules of a twin with explicit times (a fake clock in all but name): versions, metadata,
// limits, liveness and reconciliation (DESIGN §3, §7).
#include <doctest/doctest.h>

#include "tests/support/twin_steps.h"
#include "twins/twin_logic.h"

using doppel::StatusCode;
using namespace doppel::twins;

namespace {

json j(const char* s) { return json::parse(s); }

Policy test_policy() {
  Policy p;
  p.default_stale_after_s = 300;
  p.reconcile_timeout_s = 30;
  p.reconcile_max_attempts = 4;
  return p;
}

struct Fixture : doppel::testing::TwinSteps {
  Fixture() : TwinSteps(test_policy(), "pump-1", 1'000'000) {}
};

size_t deltas(const Outcome& out) {
  size_t n = 0;
  for (const auto& o : out.outputs) n += std::holds_alternative<DeltaOut>(o) ? 1 : 0;
  return n;
}

bool has_event(const Outcome& out, TwinEvent e) {
  return std::find(out.events.begin(), out.events.end(), e) != out.events.end();
}

}  // namespace

TEST_CASE("a reported change bumps reported_version and version, a no-op bumps nothing") {
  Fixture f;
  f.report(R"({"temp":20})");
  CHECK(f.twin.reported_version == 1);
  CHECK(f.twin.version == 1);
  CHECK(f.twin.desired_version == 0);
  f.report(R"({"temp":20.0})");
  CHECK(f.twin.reported_version == 1);
  CHECK(f.twin.version == 1);
  f.desire(R"({"mode":"eco"})");
  CHECK(f.twin.desired_version == 1);
  CHECK(f.twin.version == 2);
  CHECK(f.twin.reported_version == 1);
}

TEST_CASE("metadata records when each leaf was reported and which desired version set it") {
  Fixture f;
  Outcome out;
  REQUIRE(f.logic.on_reported(f.twin, ReportedMessage{j(R"({"temp":20})"), "", 999, {}, {}}, f.now,
                              out));
  CHECK(f.doc()["metadata"]["reported"]["temp"] == json{{"ts", f.now}, {"device_ts", 999}});
  f.report(R"({"fan":{"speed":1}})");
  CHECK(f.doc()["metadata"]["reported"]["fan"] == json{{"speed", {{"ts", f.now}}}});
  f.now += 50;
  f.desire(R"({"fan":{"speed":3}})");
  CHECK(f.twin.desired_meta == json{{"fan", {{"speed", {{"ts", f.now}, {"version", 1}}}}}});
}

TEST_CASE("reported metadata written before leaves were compact still renders") {
  // Databases from before the compact leaves hold {"ts": ms} objects; both forms may coexist.
  const json reported = j(R"({"a":1,"b":{"c":2},"d":3})");
  const json meta = j(R"({"a":{"ts":5},"b":{"c":[7,6]},"d":8})");
  CHECK(render_reported_meta(reported, meta) ==
        j(R"({"a":{"ts":5},"b":{"c":{"ts":7,"device_ts":6}},"d":{"ts":8}})"));
}

TEST_CASE("If-Match with a stale desired version is refused and changes nothing") {
  Fixture f;
  f.desire(R"({"a":1})");
  const json before = f.doc();
  Outcome out;
  const auto s =
      f.logic.update_desired(f.twin, UpdateDesired{j(R"({"a":2})"), false, 0}, f.now, out);
  CHECK(s.code() == StatusCode::kPreconditionFailed);
  CHECK(f.doc() == before);
  CHECK(!out.changed());
  CHECK(out.outputs.empty());
  // The current version is accepted.
  f.desire(R"({"a":2})", 1);
  CHECK(f.twin.desired["a"] == 2);
}

TEST_CASE("an update that would exceed the document size is rejected and changes nothing") {
  Policy p = test_policy();
  p.limits.max_document_bytes = 100;
  TwinLogic logic(p);
  Outcome o;
  Twin t = logic.create("x", 1, o);
  REQUIRE(logic.on_reported(
      t, ReportedMessage{j(R"({"a":"0123456789012345678901234567890123456789"})"), "", {}, {}, {}},
      2, o));
  const json before = twin_document(t, 1);
  Outcome out;
  json big = {{"b", std::string(70, 'y')}};
  const auto s = logic.on_reported(t, ReportedMessage{big, "", {}, {}, {}}, 3, out);
  CHECK(s.code() == StatusCode::kTooLarge);
  CHECK(s.message().find("limit is 100") != std::string::npos);
  CHECK(twin_document(t, 1) == before);
  // Replacing the big value with a small one is fine even though the sum is large.
  REQUIRE(logic.on_reported(t, ReportedMessage{j(R"({"a":null,"b":"small"})"), "", {}, {}, {}}, 4,
                            out));
}

TEST_CASE("too-deep and non-object patches are rejected and change nothing") {
  Fixture f;
  f.report(R"({"a":1})");
  const json before = f.doc();
  json deep = json::object();
  json* cur = &deep;
  for (int i = 0; i < 11; ++i) cur = &((*cur)["k"] = json::object());
  Outcome out;
  CHECK(f.logic.on_reported(f.twin, ReportedMessage{deep, "", {}, {}, {}}, f.now, out).code() ==
        StatusCode::kTooDeep);
  CHECK(
      f.logic.update_desired(f.twin, UpdateDesired{json::array(), false, {}}, f.now, out).code() ==
      StatusCode::kInvalidArgument);
  CHECK(f.doc() == before);
}

TEST_CASE("a desired change is published as a delta only while the device is online") {
  Fixture f;
  auto out = f.desire(R"({"mode":"eco"})");
  CHECK(deltas(out) == 0);  // never connected
  CHECK(f.twin.reconcile == ReconcileState::kPending);
  CHECK(!f.twin.reconcile_next_retry);

  out = f.birth();
  REQUIRE(deltas(out) == 1);  // the birth sends what is owed
  const auto& d = std::get<DeltaOut>(out.outputs[0]);
  CHECK(d.version == 1);
  CHECK(d.state == j(R"({"mode":"eco"})"));

  f.offline();
  out = f.desire(R"({"mode":"boost"})");
  CHECK(deltas(out) == 0);
}

TEST_CASE("a report that empties the delta converges and clears the retries") {
  Fixture f;
  f.birth();
  f.desire(R"({"fan":{"speed":3}})");
  CHECK(f.twin.reconcile == ReconcileState::kPending);
  CHECK(f.twin.reconcile_attempts == 1);
  CHECK(f.twin.reconcile_next_retry == f.now + 30'000);
  auto out = f.report(R"({"fan":{"speed":3.0},"temp":20})");
  CHECK(f.twin.reconcile == ReconcileState::kConverged);
  CHECK(f.twin.reconcile_attempts == 0);
  CHECK(!f.twin.reconcile_next_retry);
  CHECK(has_event(out, TwinEvent::kConverged));
  CHECK(f.doc()["delta"] == json::object());
}

TEST_CASE("reconcile retries back off exponentially, then fail") {
  Fixture f;  // timeout 30 s, 4 attempts
  f.birth();
  f.desire(R"({"mode":"eco"})");
  const Millis sent = f.now;
  std::vector<Millis> retries;
  for (int i = 0; i < 3; ++i) {
    const Millis due = *f.twin.reconcile_next_retry;
    f.now = due - 1;
    CHECK(deltas(f.alarm()) == 0);  // never early
    f.now = due;
    CHECK(deltas(f.alarm()) == 1);
    retries.push_back(due - sent);
  }
  CHECK(retries == std::vector<Millis>{30'000, 90'000, 210'000});  // +30, +60, +120
  CHECK(f.twin.reconcile_attempts == 4);
  f.now = *f.twin.reconcile_next_retry;  // +240 s after the 4th send
  auto out = f.alarm();
  CHECK(deltas(out) == 0);
  CHECK(f.twin.reconcile == ReconcileState::kFailed);
  CHECK(has_event(out, TwinEvent::kReconcileFailed));
  CHECK(f.doc()["reconcile"]["state"] == "failed");
  // No reconcile deadline is left (staleness has passed too by now).
  CHECK(!f.logic.next_deadline(f.twin).has_value());
}

TEST_CASE("the reconcile backoff is capped at ten minutes") {
  Policy p = test_policy();
  p.reconcile_max_attempts = 20;
  TwinLogic logic(p);
  Outcome o;
  Twin t = logic.create("x", 0, o);
  Millis now = 0;
  logic.on_status(t, StatusMessage{true, {}, {}}, Encoding::kJson, now, o);
  REQUIRE(logic.update_desired(t, UpdateDesired{j(R"({"a":1})"), false, {}}, now, o));
  Millis gap = 0;
  for (int i = 0; i < 8; ++i) {
    const Millis due = *t.reconcile_next_retry;
    gap = due - now;
    now = due;
    logic.on_alarm(t, now, o);
  }
  CHECK(gap == 600'000);
}

TEST_CASE("a desired change in the middle of retries restarts the cycle") {
  Fixture f;
  f.birth();
  f.desire(R"({"mode":"eco"})");
  f.now = *f.twin.reconcile_next_retry;
  f.alarm();
  CHECK(f.twin.reconcile_attempts == 2);
  auto out = f.desire(R"({"mode":"boost"})");
  CHECK(deltas(out) == 1);
  CHECK(f.twin.reconcile_attempts == 1);
  CHECK(f.twin.reconcile_desired_version == 2);
  CHECK(f.twin.reconcile_next_retry == f.now + 30'000);
}

TEST_CASE("a connection the broker reports: online at once, what is owed with the first message") {
  Fixture f;
  f.birth();
  f.offline();
  f.desire(R"({"mode":"eco"})");  // set while the device was away
  f.now += 1000;
  Outcome out;
  f.logic.on_connected(f.twin, f.now, out);
  CHECK(f.twin.connection == ConnectionState::kOnline);
  CHECK(f.twin.connection_since == f.now);
  CHECK(f.twin.last_seen == f.now);
  CHECK(has_event(out, TwinEvent::kOnline));
  CHECK(deltas(out) == 0);  // it has not subscribed yet: a delta now would be lost
  // Its first message, whatever it is, gets the delta (once).
  CHECK(deltas(f.report(R"({"temp":1})")) == 1);
  CHECK(deltas(f.report(R"({"temp":2})")) == 0);
  // A connection reported again (the session taken over) is owed again; no second online event.
  Outcome again;
  f.logic.on_connected(f.twin, f.now, again);
  CHECK(!has_event(again, TwinEvent::kOnline));
  CHECK(deltas(f.report(R"({"temp":3})")) == 1);
}

TEST_CASE("a birth re-sends the delta at once, and that send counts in the same cycle") {
  Fixture f;
  f.birth();
  f.desire(R"({"mode":"eco"})");
  f.now += 5000;
  auto out = f.birth();
  CHECK(deltas(out) == 1);
  CHECK(f.twin.reconcile_attempts == 2);
  CHECK(f.twin.reconcile_desired_version == 1);
  CHECK(f.twin.reconcile_last_sent == f.now);
}

TEST_CASE("a device that crashes on a delta and reconnects at once still ends failed") {
  Fixture f;  // reconcile_max_attempts 4
  f.birth();
  f.desire(R"({"mode":"eco"})");  // send 1
  size_t sent = 1;
  for (int boot = 0; boot < 10; ++boot) {  // reconnects faster than the reconcile timeout
    f.now += 1000;
    f.offline();
    sent += deltas(f.birth());
  }
  CHECK(sent == 4);
  CHECK(f.twin.reconcile == ReconcileState::kFailed);
  CHECK(f.twin.reconcile_attempts == 4);
  // A birth does not revive a failed cycle...
  CHECK(deltas(f.birth()) == 0);
  CHECK(f.twin.reconcile == ReconcileState::kFailed);
  // ...a new desired change does.
  CHECK(deltas(f.desire(R"({"mode":"boost"})")) == 1);
  CHECK(f.twin.reconcile == ReconcileState::kPending);
  CHECK(f.twin.reconcile_attempts == 1);
}

TEST_CASE("a failed twin whose device reports the desired state converges") {
  Fixture f;
  f.birth();
  f.desire(R"({"mode":"eco"})");
  for (int i = 0; i < 6; ++i) f.birth();
  REQUIRE(f.twin.reconcile == ReconcileState::kFailed);
  f.report(R"({"mode":"eco"})");
  CHECK(f.twin.reconcile == ReconcileState::kConverged);
  CHECK(f.twin.reconcile_attempts == 0);
}

TEST_CASE("a retry that falls due while the device is offline waits for its birth") {
  Fixture f;
  f.birth();
  f.desire(R"({"mode":"eco"})");
  f.offline();
  f.now = *f.twin.reconcile_next_retry;
  CHECK(deltas(f.alarm()) == 0);
  CHECK(f.twin.reconcile == ReconcileState::kPending);
  CHECK(!f.twin.reconcile_next_retry);
  CHECK(deltas(f.birth()) == 1);
}

TEST_CASE("a device that drifts from desired on its own is reconciled again") {
  Fixture f;
  f.birth();
  f.desire(R"({"mode":"eco"})");
  f.report(R"({"mode":"eco"})");
  REQUIRE(f.twin.reconcile == ReconcileState::kConverged);
  auto out = f.report(R"({"mode":"manual"})");
  CHECK(deltas(out) == 1);
  CHECK(f.twin.reconcile == ReconcileState::kPending);
}

TEST_CASE("a twin goes stale exactly stale_after after its last message, not before") {
  Fixture f;
  f.report(R"({"a":1})");
  const Millis seen = f.now;
  CHECK(f.logic.next_deadline(f.twin) == seen + 300'000);
  f.now = seen + 299'999;
  auto out = f.alarm();
  CHECK(f.twin.liveness == LivenessState::kFresh);
  CHECK(!has_event(out, TwinEvent::kStale));
  f.now = seen + 300'000;
  out = f.alarm();
  CHECK(f.twin.liveness == LivenessState::kStale);
  CHECK(has_event(out, TwinEvent::kStale));
  CHECK(f.doc()["liveness"]["state"] == "stale");
  CHECK(f.doc()["liveness"]["since"] == seen + 300'000);
  CHECK(out.fired == std::vector<Millis>{seen + 300'000});
  // A stale twin has no staleness deadline left; the next message makes it fresh.
  CHECK(!f.logic.next_deadline(f.twin).has_value());
  f.now += 10;
  out = f.report(R"({"a":2})");
  CHECK(f.twin.liveness == LivenessState::kFresh);
  CHECK(has_event(out, TwinEvent::kFresh));
  CHECK(f.doc()["liveness"]["last_seen"] == f.now);
}

TEST_CASE("stale_after is 3 x the declared interval, else the twin's, else the default") {
  Fixture f;
  CHECK(f.logic.stale_after_ms(f.twin) == 300'000);
  f.twin.stale_after_s = 45;
  CHECK(f.logic.stale_after_ms(f.twin) == 45'000);
  f.birth(10);
  CHECK(f.logic.stale_after_ms(f.twin) == 30'000);
  CHECK(f.doc()["liveness"]["stale_after_s"] == 30.0);
  f.birth(std::nullopt);  // a birth without an interval drops the declared one
  CHECK(f.logic.stale_after_ms(f.twin) == 45'000);
  f.twin.stale_after_s.reset();
  CHECK(f.logic.stale_after_ms(f.twin) == 300'000);
}

TEST_CASE("fractional windows round up, so a deadline is never early") {
  Policy p = test_policy();
  p.default_stale_after_s = 0.0005;
  TwinLogic logic(p);
  Outcome o;
  Twin t = logic.create("x", 100, o);
  CHECK(logic.stale_after_ms(t) == 1);
}

TEST_CASE("a provisioned twin that never speaks becomes stale from its creation") {
  Fixture f;
  CHECK(f.twin.liveness == LivenessState::kUnknown);
  f.now += 300'000;
  f.alarm();
  CHECK(f.twin.liveness == LivenessState::kStale);
}

TEST_CASE("the last will marks the device offline, the birth online") {
  Fixture f;
  auto out = f.birth(30);
  CHECK(f.twin.connection == ConnectionState::kOnline);
  CHECK(f.twin.connection_since == f.now);
  f.now += 7;
  out = f.offline();
  CHECK(f.twin.connection == ConnectionState::kOffline);
  CHECK(f.twin.connection_since == f.now);
  CHECK(has_event(out, TwinEvent::kOffline));
  CHECK(f.doc()["connection"]["state"] == "offline");
}

TEST_CASE("settings are validated before anything changes") {
  Fixture f;
  TwinSettings s;
  s.desired = j(R"({"a":1})");
  s.tags.present = true;
  s.tags.value = json::array();  // invalid: tags must be an object
  Outcome out;
  CHECK(!f.logic.apply_settings(f.twin, s, false, f.now, out));
  CHECK(f.twin.desired.empty());
  CHECK(f.twin.desired_version == 0);
}
