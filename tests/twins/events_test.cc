// The change feed's vocabulary: which leaves of a report changed, kind filters, the event as
// clients see it.
#include <doctest/doctest.h>

#include "twins/events.h"

using namespace doppel::twins;

TEST_CASE("changed_leaves keeps only what a merge patch changes") {
  const json target = {{"a", 1}, {"b", {{"c", 2}, {"d", 3}}}, {"e", "x"}};
  CHECK(changed_leaves(target, {{"a", 1}}) == json::object());
  CHECK(changed_leaves(target, {{"a", 1.0}}) == json::object());  // numbers by value
  CHECK(changed_leaves(target, {{"a", 2}}) == json{{"a", 2}});
  CHECK(changed_leaves(target, {{"b", {{"c", 2}, {"d", 4}}}}) == json{{"b", {{"d", 4}}}});
  CHECK(changed_leaves(target, {{"b", {{"z", nullptr}}}}) == json::object());  // deletes nothing
  CHECK(changed_leaves(target, {{"e", nullptr}}) == json{{"e", nullptr}});
  CHECK(changed_leaves(target, {{"new", {{"x", 1}}}}) == json{{"new", {{"x", 1}}}});
  CHECK(changed_leaves(target, {{"e", {{"x", 1}}}}) == json{{"e", {{"x", 1}}}});  // scalar -> obj
  CHECK(changed_leaves(target, {{"e", json::object()}}) == json{{"e", json::object()}});
}

TEST_CASE("kind filters: exact kinds and prefixes ending in .*") {
  CHECK(kind_matches("desired.updated", {}));
  CHECK(kind_matches("desired.updated", {"desired.updated"}));
  CHECK(kind_matches("command.changed", {"command.*"}));
  CHECK(!kind_matches("commandx.changed", {"command.*"}));
  CHECK(!kind_matches("desired.updated", {"reported.*", "twin.created"}));
}

TEST_CASE("an event filter: one of the twins (none: any) and one of the kinds (none: any)") {
  EventRecord e;
  e.twin = "pump-1";
  e.kind = "command.changed";
  CHECK(EventFilter{}.matches(e));
  CHECK(EventFilter{{"pump-2", "pump-1"}, {}}.matches(e));
  CHECK_FALSE(EventFilter{{"pump-2"}, {}}.matches(e));
  CHECK(EventFilter{{"pump-1"}, {"command.*"}}.matches(e));
  CHECK_FALSE(EventFilter{{"pump-1"}, {"desired.*"}}.matches(e));
  CHECK_FALSE(EventFilter{{"pump-2"}, {"command.*"}}.matches(e));
}

TEST_CASE("an event as clients see it: the stored body merged with the envelope") {
  EventRecord e;
  e.seq = 7;
  e.ts = 1000;
  e.twin = "t";
  e.kind = "desired.updated";
  e.version = 3;
  e.body = R"({"cause":{"source":"api"},"desired_version":2,"patch":{"a":1}})";
  const json j = event_json(e);
  CHECK(j["seq"] == 7);
  CHECK(j["twin"] == "t");
  CHECK(j["version"] == 3);
  CHECK(j["cause"]["source"] == "api");
  CHECK(j["patch"] == json{{"a", 1}});
}
