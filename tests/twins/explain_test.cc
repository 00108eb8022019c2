// GET /v1/twins/{id}/explain's answer (twins/explain.h), each code on a twin driven into that state
// by the twin's own rules, with explicit times.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/support/twin_steps.h"
#include "twins/explain.h"

using namespace doppel::twins;

namespace {

Policy test_policy() {
  Policy p;
  p.default_stale_after_s = 300;
  p.reconcile_timeout_s = 30;
  p.reconcile_max_attempts = 3;
  return p;
}

// 2025-12-05 12:01:07 UTC
struct Fixture : doppel::testing::TwinSteps {
  Fixture() : TwinSteps(test_policy(), "fan-1", 1'764'936'067'000) {}
  void online(bool up, std::optional<double> interval = std::nullopt) {
    if (up) {
      birth(interval);
    } else {
      offline();
    }
  }
  json explain() const { return doppel::twins::explain(twin, logic, now); }
};

std::vector<std::string> codes(const json& e) {
  std::vector<std::string> out;
  for (const auto& r : e["reasons"]) out.push_back(r["code"]);
  return out;
}

const json& reason(const json& e, const std::string& code) {
  for (const auto& r : e["reasons"]) {
    if (r["code"] == code) return r;
  }
  FAIL("no reason " << code << " in " << e.dump());
  static const json kNone;
  return kNone;
}

}  // namespace

TEST_CASE("a twin whose device reports what was desired is converged, with nothing to say") {
  Fixture f;
  f.online(true);
  f.desire(R"({"fan":{"speed":2}})");
  f.report(R"({"fan":{"speed":2}})");
  const json e = f.explain();
  CHECK(e["converged"] == true);
  CHECK(e["reasons"].empty());
}

TEST_CASE("offline: the delta waits for the device to reconnect") {
  Fixture f;
  f.online(true);
  f.now += 5000;
  f.online(false);
  const Millis went = f.now;
  f.now += 60'000;
  f.desire(R"({"fan":{"speed":2}})");
  const json e = f.explain();
  CHECK(e["converged"] == false);
  CHECK(codes(e).front() == "offline");
  const json& r = reason(e, "offline");
  CHECK(r["since"] == went);
  CHECK(r["text"] == "offline since 2025-12-05 12:01:12 UTC; the delta waits for it to reconnect");

  Fixture never;  // a device that never connected
  never.desire(R"({"x":1})");
  const json n = never.explain();
  CHECK(reason(n, "offline")["connection"] == "unknown");
  CHECK(reason(n, "offline")["text"].get<std::string>().find("first connection") !=
        std::string::npos);
}

TEST_CASE("retrying: sent n of max times, last and next") {
  Fixture f;
  f.online(true);
  f.desire(R"({"fan":{"speed":2}})");  // sent at once: attempt 1
  json e = f.explain();
  json r = reason(e, "retrying");
  CHECK(r["attempts"] == 1);
  CHECK(r["max_attempts"] == 3);
  CHECK(r["last_sent"] == f.now);
  CHECK(r["next_retry"] == f.now + 30'000);
  CHECK(r["text"] ==
        "sent 1 of 3 times, last 2025-12-05 12:01:07 UTC, next 2025-12-05 12:01:37 UTC (in 30 s)");
  f.now += 30'000;
  f.alarm();  // attempt 2
  e = f.explain();
  CHECK(reason(e, "retrying")["attempts"] == 2);
  const auto c = codes(e);
  CHECK(std::find(c.begin(), c.end(), "offline") == c.end());  // online
}

TEST_CASE("failed: reconciliation gave up after the maximum sends") {
  Fixture f;
  f.online(true);
  f.desire(R"({"fan":{"speed":2}})");
  for (int i = 0; i < 10 && f.twin.reconcile != ReconcileState::kFailed; ++i) {
    f.now = *f.twin.reconcile_next_retry;
    f.alarm();
  }
  REQUIRE(f.twin.reconcile == ReconcileState::kFailed);
  const json e = f.explain();
  CHECK(e["converged"] == false);
  const json& r = reason(e, "failed");
  CHECK(r["attempts"] == 3);
  CHECK(r["text"] == "failed after 3 sends; a new desired change starts again");
}

TEST_CASE("not_applied: the device reported the field after the delta was sent, unchanged") {
  Fixture f;
  f.online(true);
  f.report(R"({"fan":{"speed":1},"mode":"eco"})");
  f.desire(R"({"fan":{"speed":2}})");  // the delta goes out now
  const Millis sent = f.now;
  f.now += 2000;
  f.report(R"({"fan":{"speed":1}})");
  const json e = f.explain();
  const json& r = reason(e, "not_applied");
  CHECK(r["field"] == "fan.speed");
  CHECK(r["reported"] == 1);
  CHECK(r["desired"] == 2);
  CHECK(r["sent_at"] == sent);
  CHECK(r["reported_at"] == sent + 2000);
  CHECK(r["text"] ==
        "reported `fan.speed` = 1 at 2025-12-05 12:01:09 UTC, 2 s after the delta was sent: the "
        "device received it and did not apply it");

  // A field last reported before the delta was sent is no evidence.
  Fixture g;
  g.online(true);
  g.report(R"({"fan":{"speed":1}})");
  g.now += 1000;
  g.desire(R"({"fan":{"speed":2}})");
  g.now += 2000;
  g.report(R"({"mode":"eco"})");
  const auto c = codes(g.explain());
  CHECK(std::find(c.begin(), c.end(), "not_applied") == c.end());
}

TEST_CASE("device_error: the last refused message, until the device sends something accepted") {
  Fixture f;
  f.online(true);
  f.now += 1000;
  f.twin.last_error = DeviceError{f.now, "twins/fan-1/reported", "malformed",
                                  "the payload is not JSON: syntax error at byte 3"};
  json e = f.explain();
  const json& r = reason(e, "device_error");
  CHECK(r["error"] == "malformed");
  CHECK(r["topic"] == "twins/fan-1/reported");
  CHECK(r["text"].get<std::string>().find("syntax error at byte 3") != std::string::npos);
  CHECK(e["converged"] == true);  // nothing desired: an error alone does not unconverge it

  f.now += 1000;
  f.report(R"({"ok":true})");  // accepted after the error: old news
  const auto c = codes(f.explain());
  CHECK(std::find(c.begin(), c.end(), "device_error") == c.end());
}

TEST_CASE("stale: nothing heard for longer than the staleness window") {
  Fixture f;
  f.online(true, 10.0);  // declares a 10 s interval: stale after 30 s
  const Millis seen = f.now;
  f.now += 31'000;
  f.alarm();
  REQUIRE(f.twin.liveness == LivenessState::kStale);
  const json e = f.explain();
  const json& r = reason(e, "stale");
  CHECK(r["last_seen"] == seen);
  CHECK(r["stale_after_s"] == 30.0);
  CHECK(r["text"] ==
        "no message since 2025-12-05 12:01:07 UTC (31 s ago); it is stale after 30 s without one");
}

TEST_CASE("command_pending: commands that wait to be delivered or for their result") {
  Fixture f;
  for (const char* name : {"reboot", "calibrate"}) {
    Outcome out;
    CommandRequest req;
    req.name = name;
    REQUIRE(f.logic.enqueue(f.twin, req, f.now, out));
  }
  const json e = f.explain();
  const json& r = reason(e, "command_pending");
  REQUIRE(r["commands"].size() == 2);
  CHECK(r["commands"][0]["name"] == "reboot");
  CHECK(r["commands"][0]["status"] == "queued");
  CHECK(r["text"].get<std::string>().rfind("2 commands wait: 'reboot'", 0) == 0);
}

TEST_CASE("format_utc") {
  CHECK(format_utc(0) == "1970-01-01 00:00:00 UTC");
  CHECK(format_utc(1'764'936'067'999) == "2025-12-05 12:01:07 UTC");
}
