// Limits, device id rules and bounded JSON parsing (DESIGN §3).
#include <doctest/doctest.h>

#include "twins/document.h"

using doppel::StatusCode;
using namespace doppel::twins;

TEST_CASE("device ids follow [A-Za-z0-9][A-Za-z0-9._:-]{0,127}") {
  Limits l;
  for (const char* ok : {"a", "pump-0042", "Z9", "site.north:pump_7", "0-0"}) {
    CHECK_MESSAGE(valid_device_id(ok, l), ok);
  }
  CHECK(valid_device_id(std::string(128, 'x'), l));
  for (const char* bad : {"", "-pump", ".x", "_x", "a b", "a/b", "a+b", "a#b", "pump\n", "é"}) {
    CHECK_MESSAGE(!valid_device_id(bad, l), bad);
  }
  CHECK(!valid_device_id(std::string(129, 'x'), l));
}

TEST_CASE("an invalid id gets an error that says what is allowed") {
  const auto s = check_device_id("bad id", Limits{});
  CHECK(s.code() == StatusCode::kInvalidId);
  CHECK(s.message().find("bad id") != std::string::npos);
  CHECK(s.message().find("letters, digits") != std::string::npos);
}

TEST_CASE("bracket depth ignores brackets inside strings") {
  CHECK(json_text_depth(R"({"a":"{{{[[["})", 100) == 1);
  CHECK(json_text_depth(R"({"a":"\"{{"})", 100) == 1);
  CHECK(json_text_depth(R"([[[1]]])", 100) == 3);
  CHECK(json_text_depth("42", 100) == 0);
}

TEST_CASE("parse_json enforces size, then depth, then syntax") {
  auto big = parse_json(std::string(2000, ' '), 1000, 10);
  CHECK(big.status().code() == StatusCode::kTooLarge);

  std::string deep(50, '[');
  deep += std::string(50, ']');
  CHECK(parse_json(deep, 1000, 10).status().code() == StatusCode::kTooDeep);

  auto bad = parse_json(R"({"a": tru})", 1000, 10);
  REQUIRE(!bad);
  CHECK(bad.status().code() == StatusCode::kMalformed);
  CHECK(bad.status().message().find("column") != std::string::npos);

  auto good = parse_json(R"({"a": [1, {"b": null}]})", 1000, 10);
  REQUIRE(good);
  CHECK((*good)["a"][0] == 1);
}

TEST_CASE("a hostile depth is rejected without recursing into it") {
  std::string deep(1'000'000, '[');
  CHECK(parse_json(deep, 2'000'000, 10).status().code() == StatusCode::kTooDeep);
}

TEST_CASE("state documents must be objects within depth, key and size limits") {
  Limits l;
  l.max_depth = 3;
  l.max_key_bytes = 4;
  l.max_document_bytes = 40;
  CHECK(check_state_document(json::array(), l, "desired").code() == StatusCode::kInvalidArgument);
  CHECK(check_state_document(json::parse(R"({"a":{"b":{"c":1}}})"), l, "desired").is_ok());
  CHECK(check_state_document(json::parse(R"({"a":{"b":{"c":{}}}})"), l, "desired").code() ==
        StatusCode::kTooDeep);
  CHECK(check_state_document(json::parse(R"({"a":[[[1]]]})"), l, "desired").code() ==
        StatusCode::kTooDeep);
  CHECK(check_state_document(json::parse(R"({"abcde":1})"), l, "desired").code() ==
        StatusCode::kInvalidArgument);
  CHECK(check_state_document(json::parse(R"({"":1})"), l, "desired").code() ==
        StatusCode::kInvalidArgument);
  auto big = json::object();
  big["a"] = std::string(50, 'x');
  CHECK(check_state_document(big, l, "desired").code() == StatusCode::kTooLarge);
  CHECK(check_state_document(big, l, "desired", false).is_ok());
}

TEST_CASE("numbers compare by value, everything else by type and content") {
  CHECK(values_equal(json(1), json(1.0)));
  CHECK(values_equal(json(3u), json(3)));
  CHECK(!values_equal(json(-1), json(static_cast<uint64_t>(-1))));
  CHECK(!values_equal(json(1), json("1")));
  CHECK(!values_equal(json(true), json(1)));
  CHECK(values_equal(json::parse("[1, {\"a\": 2.0}]"), json::parse("[1.0, {\"a\": 2}]")));
  CHECK(!values_equal(json::parse("[1, 2]"), json::parse("[2, 1]")));
  CHECK(!values_equal(json::parse(R"({"a":1})"), json::parse(R"({"a":1,"b":2})")));
}

TEST_CASE("regression: a number too large for a double is malformed input, not a crash") {
  auto r = parse_json(R"({"state":{"x":1)" + std::string(400, '0') + "}}", 100000, 10);
  REQUIRE(!r);
  CHECK(r.status().code() == StatusCode::kMalformed);
  CHECK(r.status().message().find("number overflow") != std::string::npos);
}
