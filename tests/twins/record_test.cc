// The persisted form: a twin that hibernates and wakes keeps every field (DESIGN §2).
#include <doctest/doctest.h>

#include "twins/record.h"
#include "twins/twin_logic.h"

using namespace doppel::twins;

namespace {

StoredTwin stored(Twin& t, std::optional<Millis> deadline) {
  StoredTwin st;
  st.twin = to_record(t, deadline);
  for (const auto& c : t.commands) st.commands.push_back(to_record(c));
  return st;
}

}  // namespace

TEST_CASE("hibernate then wake keeps every field") {
  Policy p;
  TwinLogic logic(p);
  Outcome out;
  Millis now = 1'764'246'000'000;
  Twin t = logic.create("pump-0042", now, out);
  logic.on_status(t, StatusMessage{true, 12.5, Encoding::kProtobuf}, Encoding::kProtobuf, now, out);
  REQUIRE(logic.on_reported(
      t, ReportedMessage{json::parse(R"({"fan":{"speed":1},"l":[1,2.5]})"), "tok", 42, {}, {}},
      now + 1, out));
  REQUIRE(logic.update_desired(t, UpdateDesired{json::parse(R"({"fan":{"speed":3}})"), false, {}},
                               now + 2, out));
  TwinSettings s;
  s.tags.present = true;
  s.tags.value = json::parse(R"({"site":"north"})");
  s.stale_after_s.present = true;
  s.stale_after_s.value = 90;
  s.command_strategy = CommandStrategy::kBurst;
  REQUIRE(logic.apply_settings(t, s, false, now + 3, out));
  CommandRequest r;
  r.name = "reboot";
  r.args = json::parse(R"({"delay_s":5})");
  r.ttl_s = 60;
  r.idempotency_key = "k1";
  REQUIRE(logic.enqueue(t, r, now + 4, out));
  r.idempotency_key = "k2";
  REQUIRE(logic.enqueue(t, r, now + 5, out));
  logic.on_command_result(
      t, t.commands[0].id,
      CommandResultMessage{ResultStatus::kSucceeded, json::parse(R"({"ok":1})"), ""}, now + 6, out);
  REQUIRE(t.commands[0].status == CommandStatus::kSucceeded);
  REQUIRE(t.commands[1].status == CommandStatus::kSent);

  const auto deadline = logic.next_deadline(t);
  auto back = from_record(stored(t, deadline));
  REQUIRE(back);
  const Millis stale = logic.stale_after_ms(t);
  CHECK(twin_document(*back, stale) == twin_document(t, stale));
  CHECK(back->reported_meta == t.reported_meta);
  CHECK(back->desired_meta == t.desired_meta);
  CHECK(back->encoding == Encoding::kProtobuf);
  CHECK(back->interval_s == t.interval_s);
  CHECK(back->next_command_seq == t.next_command_seq);
  CHECK(logic.next_deadline(*back) == deadline);
  REQUIRE(back->commands.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(command_document(back->commands[i]) == command_document(t.commands[i]));
  }
  CHECK(back->commands[1].ack_deadline == t.commands[1].ack_deadline);
}

TEST_CASE("a corrupt stored row is an error, not a crash") {
  StoredTwin st;
  st.twin.id = "x";
  st.twin.desired = "{}";
  st.twin.reported = "{not json";
  st.twin.body = "\x81\xa1";
  auto t = from_record(st);
  CHECK(!t);
  CHECK(t.status().code() == doppel::StatusCode::kInternal);
}

TEST_CASE("the cached desired serialization follows every desired change") {
  TwinLogic logic{Policy{}};
  Outcome out;
  Twin t = logic.create("c-1", 1, out);
  REQUIRE(logic.update_desired(t, UpdateDesired{json{{"a", 1}}, false, {}}, 2, out));
  CHECK(to_record(t, std::nullopt).desired == R"({"a":1})");
  REQUIRE(logic.update_desired(t, UpdateDesired{json{{"a", 2}}, false, {}}, 3, out));
  const TwinRecord r = to_record(t, std::nullopt);
  CHECK(r.desired == R"({"a":2})");
  CHECK(json::from_msgpack(r.desired_meta)["a"]["version"] == 2);
  REQUIRE(logic.update_desired(t, UpdateDesired{json{{"b", 1}}, true, {}}, 4, out));
  CHECK(to_record(t, std::nullopt).desired == R"({"b":1})");
}
