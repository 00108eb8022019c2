// The AWS dialect's rules on a twin (twin_logic.h, aws_shadow.h) at explicit times: an update's
// version check and the device's own desired patch change nothing when refused; accepted,
// documents and delta carry the one document version and second timestamps; get and delete of a
// twin without a shadow are 404; delete clears both sections without resetting the version.
#include <doctest/doctest.h>

#include "tests/support/twin_steps.h"
#include "twins/aws_shadow.h"

using doppel::Status;
using doppel::StatusCode;
using namespace doppel::twins;

namespace {

json j(const char* s) { return json::parse(s); }

Policy with_documents() {
  Policy p;
  p.aws_documents = true;
  return p;
}

struct AwsTwin : doppel::testing::TwinSteps {
  explicit AwsTwin(Policy p = with_documents()) : TwinSteps(p, "thing-1", 1'700'000'000'123) {
    twin.dialect = Dialect::kAws;
  }

  Status update(const char* reported, std::optional<json> desired, std::optional<uint64_t> version,
                Outcome& out) {
    ReportedMessage m{j(reported), "tok", {}, std::move(desired), version};
    return logic.on_reported(twin, m, now, out);
  }

  template <typename T>
  static const T* find(const Outcome& out, ShadowOp op = ShadowOp::kUpdate) {
    for (const auto& o : out.outputs) {
      if (const auto* v = std::get_if<T>(&o)) {
        if constexpr (std::is_same_v<T, ShadowReply>) {
          if (v->op != op) continue;
        }
        return v;
      }
    }
    return nullptr;
  }
};

}  // namespace

TEST_CASE("an update answers accepted and documents with the document version, in seconds") {
  AwsTwin t;
  Outcome out;
  REQUIRE(t.update(R"({"temp":20,"fan":{"on":true}})", std::nullopt, std::nullopt, out));
  const auto* acc = AwsTwin::find<ShadowReply>(out, ShadowOp::kUpdate);
  REQUIRE(acc != nullptr);
  const json accepted = json::parse(acc->to_json_text());
  CHECK(accepted["version"] == t.twin.version);
  CHECK(accepted["timestamp"] == 1'700'000'000);
  CHECK(accepted["clientToken"] == "tok");
  CHECK(accepted["metadata"]["reported"]["fan"]["on"]["timestamp"] == 1'700'000'000);
  CHECK_FALSE(accepted["state"].contains("desired"));
  const auto* docs = AwsTwin::find<ShadowReply>(out, ShadowOp::kDocuments);
  REQUIRE(docs != nullptr);
  CHECK(docs->body["previous"]["version"] == 0);
  CHECK(docs->body["current"]["version"] == t.twin.version);
  CHECK(docs->body["current"]["state"]["reported"]["temp"] == 20);

  AwsTwin without(Policy{});  // --aws-documents off: accepted only
  Outcome plain;
  REQUIRE(without.update(R"({"temp":20})", std::nullopt, std::nullopt, plain));
  CHECK(AwsTwin::find<ShadowReply>(plain, ShadowOp::kUpdate) != nullptr);
  CHECK(AwsTwin::find<ShadowReply>(plain, ShadowOp::kDocuments) == nullptr);
}

TEST_CASE("a stale version or a bad section is refused and changes nothing") {
  AwsTwin t;
  Outcome first;
  REQUIRE(t.update(R"({"a":1})", std::nullopt, std::nullopt, first));
  const Twin before = t.twin;
  Outcome out;
  Status s = t.update(R"({"a":2})", j(R"({"x":1})"), before.version - 1, out);
  CHECK(s.code() == StatusCode::kConflict);
  // A desired section that breaks the limits is refused before reported is touched.
  json deep = json::object();
  json* at = &deep;
  for (int i = 0; i < 40; ++i) at = &((*at)["d"] = json::object());
  s = t.update(R"({"a":3})", deep, std::nullopt, out);
  CHECK(s.code() == StatusCode::kTooDeep);
  CHECK(t.twin.version == before.version);
  CHECK(t.twin.reported == before.reported);
  CHECK(t.twin.desired == before.desired);
  CHECK(out.outputs.empty());
}

TEST_CASE("the device's desired patch is applied, and a delta carries version and metadata") {
  AwsTwin t;
  Outcome out;
  REQUIRE(t.update(R"({"mode":"eco"})", j(R"({"mode":"boost","fan":2})"), std::nullopt, out));
  CHECK(t.twin.desired == j(R"({"mode":"boost","fan":2})"));
  const auto* delta = AwsTwin::find<DeltaOut>(out);
  REQUIRE(delta != nullptr);
  CHECK(delta->state == j(R"({"mode":"boost","fan":2})"));
  CHECK(delta->metadata["fan"]["timestamp"] == 1'700'000'000);
  CHECK(delta->at == t.now);
  // Null in desired deletes.
  Outcome cleared;
  REQUIRE(t.update("{}", j(R"({"mode":null,"fan":null})"), t.twin.version, cleared));
  CHECK(t.twin.desired.empty());
  CHECK(t.twin.reconcile == ReconcileState::kConverged);
}

TEST_CASE("get and delete: 404 without a shadow; delete clears both and keeps counting") {
  AwsTwin t;
  Outcome out;
  CHECK(t.logic.on_get(t.twin, GetMessage{"g"}, t.now, out).code() == StatusCode::kNotFound);
  CHECK(t.logic.on_delete(t.twin, DeleteMessage{"d", std::nullopt}, t.now, out).code() ==
        StatusCode::kNotFound);
  REQUIRE(t.update(R"({"a":1,"b":{"c":2}})", j(R"({"a":5})"), std::nullopt, out));
  Outcome got;
  REQUIRE(t.logic.on_get(t.twin, GetMessage{"g"}, t.now, got));
  const auto* body = AwsTwin::find<ShadowReply>(got, ShadowOp::kGet);
  REQUIRE(body != nullptr);
  CHECK(body->body["state"]["delta"] == j(R"({"a":5})"));
  CHECK(body->body["metadata"]["reported"]["b"]["c"]["timestamp"] == 1'700'000'000);

  const uint64_t version = t.twin.version;
  Outcome stale;
  CHECK(t.logic.on_delete(t.twin, DeleteMessage{"d", version + 7}, t.now, stale).code() ==
        StatusCode::kConflict);
  Outcome del;
  REQUIRE(t.logic.on_delete(t.twin, DeleteMessage{"d", version}, t.now, del));
  CHECK(t.twin.reported.empty());
  CHECK(t.twin.desired.empty());
  CHECK(t.twin.version == version + 2);  // desired cleared, then reported
  const auto* acc = AwsTwin::find<ShadowReply>(del, ShadowOp::kDelete);
  REQUIRE(acc != nullptr);
  CHECK(acc->body["version"] == t.twin.version);
  // The feed gets a reported patch that deletes every key, so history replays it.
  bool cleared = false;
  for (const auto& c : del.changes) {
    if (c.kind == "reported.updated") cleared = c.fields["patch"] == j(R"({"a":null,"b":null})");
  }
  CHECK(cleared);
}

TEST_CASE("AWS IoT Jobs over the command queue: notify-next, $next, start, update, refusals") {
  AwsTwin t;
  Outcome seen;
  REQUIRE(t.update(R"({"a":1})", std::nullopt, std::nullopt, seen));  // online
  Outcome queued;
  CommandRequest request;
  request.name = "reboot";
  request.args = j(R"({"delay":1})");
  auto cmd = t.logic.enqueue(t.twin, request, t.now, queued);
  REQUIRE(cmd);
  const std::string id = (*cmd)->id;
  // Delivered as notify-next with the job document.
  const auto* notify = AwsTwin::find<ShadowReply>(queued, ShadowOp::kUpdate);
  REQUIRE(notify != nullptr);
  CHECK(notify->jobs_topic == "notify-next");
  CHECK(notify->body["execution"]["jobId"] == id);
  CHECK(notify->body["execution"]["jobDocument"] ==
        j(R"({"operation":"reboot","args":{"delay":1}})"));
  CHECK(notify->body["execution"]["status"] == "IN_PROGRESS");

  Outcome next;
  REQUIRE(t.logic.on_jobs_query(t.twin, "$next", JobsQueryMessage{"n"}, t.now, next));
  const auto* answer = AwsTwin::find<ShadowReply>(next, ShadowOp::kGet);
  REQUIRE(answer != nullptr);
  CHECK(answer->jobs_topic == "$next/get/accepted");
  CHECK(answer->body["execution"]["jobId"] == id);
  CHECK(answer->body["clientToken"] == "n");

  Outcome unknown;
  CHECK(t.logic.on_jobs_query(t.twin, "nope", JobsQueryMessage{}, t.now, unknown).code() ==
        StatusCode::kNotFound);

  Outcome done;
  JobUpdateMessage update;
  update.result.status = ResultStatus::kSucceeded;
  update.result.result = j(R"({"took":"1s"})");
  REQUIRE(t.logic.on_job_update(t.twin, id, update, t.now, done));
  CHECK(find_command(t.twin, id)->status == CommandStatus::kSucceeded);
  const auto* accepted = AwsTwin::find<ShadowReply>(done, ShadowOp::kUpdate);
  REQUIRE(accepted != nullptr);
  CHECK(accepted->jobs_topic == id + "/update/accepted");
  // A finished execution cannot change again: InvalidStateTransition.
  Outcome again;
  CHECK(t.logic.on_job_update(t.twin, id, update, t.now, again).code() == StatusCode::kConflict);
  // Nothing pending now: $next answers without an execution.
  Outcome empty;
  REQUIRE(t.logic.on_jobs_query(t.twin, "$next", JobsQueryMessage{}, t.now, empty));
  CHECK_FALSE(AwsTwin::find<ShadowReply>(empty, ShadowOp::kGet)->body.contains("execution"));
}

TEST_CASE("a Doppel-dialect twin gets its own answers, never the shadow's") {
  doppel::testing::TwinSteps t(Policy{}, "own", 1000);
  Outcome out;
  REQUIRE(t.logic.on_get(t.twin, GetMessage{"g"}, t.now, out));
  REQUIRE(out.outputs.size() == 1);
  CHECK(std::holds_alternative<TwinOut>(out.outputs[0]));
  auto reported = t.report(R"({"a":1})");
  for (const auto& o : reported.outputs) CHECK_FALSE(std::holds_alternative<ShadowReply>(o));
}

TEST_CASE("the update answer, written as text directly, is the document AWS describes") {
  Twin twin;
  twin.version = 42;
  // Keys and a token that need escaping, nesting, null leaves (AWS echoes them), arrays as leaves.
  const json reported = j(R"({"a\"b":{"c\\d":1,"e\nf":null},"list":[1,{"x":2}],"ü":"ß"})");
  const json desired = j(R"({"mode":"eco","deep":{"er":{"est":true}}})");
  const std::string token = "tok\"en\\1";
  auto stamped = [](const json& section, auto&& self) -> json {
    if (!section.is_object()) return {{"timestamp", 1'700'000'000}};
    json out = json::object();
    for (const auto& [k, v] : section.items()) out[k] = self(v, self);
    return out;
  };
  const Millis now = 1'700'000'000'999;
  SUBCASE("reported only") {
    const json got = json::parse(shadow_update_accepted(twin, std::nullopt, reported, now, token));
    const json want = {{"state", {{"reported", reported}}},
                       {"metadata", {{"reported", stamped(reported, stamped)}}},
                       {"version", 42},
                       {"timestamp", 1'700'000'000},
                       {"clientToken", token}};
    CHECK(got == want);
  }
  SUBCASE("desired and reported, no token") {
    const json got = json::parse(shadow_update_accepted(twin, desired, reported, now, ""));
    const json want = {
        {"state", {{"desired", desired}, {"reported", reported}}},
        {"metadata",
         {{"desired", stamped(desired, stamped)}, {"reported", stamped(reported, stamped)}}},
        {"version", 42},
        {"timestamp", 1'700'000'000}};
    CHECK(got == want);
  }
  SUBCASE("desired only: the empty reported section is left out") {
    const json got = json::parse(shadow_update_accepted(twin, desired, json::object(), now, ""));
    CHECK(got["state"] == json{{"desired", desired}});
    CHECK(got["metadata"] == json{{"desired", stamped(desired, stamped)}});
  }
}
