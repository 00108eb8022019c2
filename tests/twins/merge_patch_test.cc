// RFC 7386 merge patch, per-leaf metadata, and the delta (DESIGN §3).
#include <doctest/doctest.h>

#include "twins/merge_patch.h"

using namespace doppel::twins;

namespace {
json j(const char* s) { return json::parse(s); }
}  // namespace

TEST_CASE("merge patch follows every example of RFC 7386 appendix A") {
  const char* cases[][3] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", "null", "null"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const auto& c : cases) {
    json target = j(c[0]);
    apply_merge_patch(target, j(c[1]));
    CHECK_MESSAGE(target == j(c[2]), c[0], " + ", c[1]);
  }
}

TEST_CASE("merge patch reports whether anything changed") {
  json t = j(R"({"a":1,"b":{"c":2}})");
  CHECK(!apply_merge_patch(t, j(R"({"a":1.0})")));   // same value
  CHECK(!apply_merge_patch(t, j(R"({"x":null})")));  // deleting a missing key
  CHECK(!apply_merge_patch(t, j(R"({"b":{}})")));
  CHECK(apply_merge_patch(t, j(R"({"b":{"c":3}})")));
  CHECK(apply_merge_patch(t, j(R"({"a":null})")));
  CHECK(t == j(R"({"b":{"c":3}})"));
}

TEST_CASE("arrays are replaced, never merged") {
  json t = j(R"({"list":[1,2,3]})");
  apply_merge_patch(t, j(R"({"list":[4]})"));
  CHECK(t == j(R"({"list":[4]})"));
}

TEST_CASE("metadata mirrors the state: leaves stamped, deletes removed") {
  json state = json::object();
  json meta = json::object();
  apply_merge_patch(state, meta, j(R"({"fan":{"speed":1},"temp":20})"), j(R"({"ts":100})"));
  CHECK(meta == j(R"({"fan":{"speed":{"ts":100}},"temp":{"ts":100}})"));

  apply_merge_patch(state, meta, j(R"({"fan":{"speed":2}})"), j(R"({"ts":200})"));
  CHECK(meta["fan"]["speed"]["ts"] == 200);
  CHECK(meta["temp"]["ts"] == 100);  // untouched leaves keep their time

  apply_merge_patch(state, meta, j(R"({"fan":null})"), j(R"({"ts":300})"));
  CHECK(!meta.contains("fan"));

  // A leaf that becomes an object gets per-leaf metadata below it.
  apply_merge_patch(state, meta, j(R"({"temp":{"inside":21}})"), j(R"({"ts":400})"));
  CHECK(meta == j(R"({"temp":{"inside":{"ts":400}}})"));
  // And back: the object's metadata collapses to one leaf.
  apply_merge_patch(state, meta, j(R"({"temp":19})"), j(R"({"ts":500})"));
  CHECK(meta == j(R"({"temp":{"ts":500}})"));
}

TEST_CASE("delta holds desired leaves that differ from reported, recursively") {
  CHECK(compute_delta(j(R"({"fan":{"speed":3},"mode":"eco"})"),
                      j(R"({"fan":{"speed":1},"mode":"eco","temp":21.5})")) ==
        j(R"({"fan":{"speed":3}})"));
}

TEST_CASE("delta treats a missing reported key as different") {
  CHECK(compute_delta(j(R"({"a":{"b":1}})"), j(R"({})")) == j(R"({"a":{"b":1}})"));
  CHECK(compute_delta(j(R"({"a":{"b":1}})"), j(R"({"a":5})")) == j(R"({"a":{"b":1}})"));
}

TEST_CASE("delta compares numbers by value") {
  CHECK(compute_delta(j(R"({"speed":1,"ratio":0.5})"), j(R"({"speed":1.0,"ratio":0.5})")).empty());
  CHECK(compute_delta(j(R"({"speed":1})"), j(R"({"speed":"1"})")) == j(R"({"speed":1})"));
}

TEST_CASE("delta omits reported-only keys") {
  CHECK(compute_delta(j(R"({"a":1})"), j(R"({"a":1,"b":2,"c":{"d":3}})")).empty());
  CHECK(compute_delta(j(R"({})"), j(R"({"a":1})")).empty());
}

TEST_CASE("delta omits empty objects") {
  CHECK(compute_delta(j(R"({"a":{}})"), j(R"({})")).empty());
  CHECK(compute_delta(j(R"({"a":{"b":{}}, "c": 1})"), j(R"({"c":1})")).empty());
  CHECK(compute_delta(j(R"({"a":{"b":{},"c":2}})"), j(R"({})")) == j(R"({"a":{"c":2}})"));
}

TEST_CASE("delta_is_empty agrees with compute_delta") {
  const char* cases[][2] = {{R"({"a":{}})", "{}"},
                            {R"({"a":{"b":1}})", R"({"a":{"b":1.0}})"},
                            {R"({"a":{"b":1}})", R"({"a":{"b":2}})"},
                            {R"({"a":1})", R"({"b":1})"},
                            {R"({})", R"({"x":1})"},
                            {R"({"l":[1]})", R"({"l":[1]})"},
                            {R"({"a":{"b":{}},"c":1})", R"({"c":1})"}};
  for (const auto& c : cases) {
    CHECK_MESSAGE(delta_is_empty(j(c[0]), j(c[1])) == compute_delta(j(c[0]), j(c[1])).empty(), c[0],
                  " vs ", c[1]);
  }
}

TEST_CASE("delta compares arrays as whole values") {
  CHECK(compute_delta(j(R"({"l":[1,2]})"), j(R"({"l":[1,2.0]})")).empty());
  CHECK(compute_delta(j(R"({"l":[1,2]})"), j(R"({"l":[2,1]})")) == j(R"({"l":[1,2]})"));
}
