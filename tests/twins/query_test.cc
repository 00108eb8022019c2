// The fleet query language's grammar: every operator, keywords in any case, literals, and errors
// that name the 1-based column (in characters, not bytes) and what was expected there.
#include <doctest/doctest.h>

#include "twins/query.h"

using namespace doppel::twins;
using Op = QueryExpr::Op;

namespace {

QueryExprPtr parsed(const std::string& text) {
  auto e = parse_query(text);
  REQUIRE_MESSAGE(e, e.status().to_string());
  return std::move(*e);
}

std::string error_of(const std::string& text) {
  auto e = parse_query(text);
  REQUIRE_FALSE(e);
  CHECK(e.status().code() == doppel::StatusCode::kInvalidArgument);
  return e.status().message();
}

}  // namespace

TEST_CASE("every comparison operator, IN, NOT IN, LIKE and EXISTS parse") {
  const std::pair<const char*, Op> ops[] = {{"=", Op::kEq},  {"!=", Op::kNe}, {"<", Op::kLt},
                                            {"<=", Op::kLe}, {">", Op::kGt},  {">=", Op::kGe}};
  for (const auto& [text, op] : ops) {
    auto e = parsed(std::string("reported.temp ") + text + " 21.5");
    CHECK(e->op == op);
    CHECK(std::get<QueryField>(e->left).path == std::vector<std::string>{"temp"});
    CHECK(std::get<double>(std::get<QueryLiteral>(e->right).value) == 21.5);
  }
  auto in = parsed("tags.site IN ('berlin', 'paris', 3, true)");
  CHECK(in->op == Op::kIn);
  REQUIRE(in->list.size() == 4);
  CHECK(std::get<bool>(in->list[3].value));
  auto not_in = parsed("tags.site not in ('x')");
  CHECK(not_in->op == Op::kNot);
  CHECK(not_in->children[0]->op == Op::kIn);
  auto like = parsed("reported.fw LIKE '1.%'");
  CHECK(like->op == Op::kLike);
  CHECK(like->pattern == "1.%");
  auto exists = parsed("EXISTS(desired.mode)");
  CHECK(exists->op == Op::kExists);
  CHECK(std::get<QueryField>(exists->left).doc == QueryField::Doc::kDesired);
  // A field compared with a field.
  auto ff = parsed("desired.mode != reported.mode");
  CHECK(std::get<QueryField>(ff->right).doc == QueryField::Doc::kReported);
  CHECK(parsed("")->op == Op::kTrue);
}

TEST_CASE("AND binds tighter than OR; NOT and parentheses; keywords in any case") {
  auto e = parsed("id = 'a' or id = 'b' AnD NOT (version > 2 OR version < 1)");
  REQUIRE(e->op == Op::kOr);
  REQUIRE(e->children.size() == 2);
  CHECK(e->children[0]->op == Op::kEq);
  REQUIRE(e->children[1]->op == Op::kAnd);
  CHECK(e->children[1]->children[1]->op == Op::kNot);
  CHECK(e->children[1]->children[1]->children[0]->op == Op::kOr);
  auto fixed = parsed(
      "liveness.state = 'stale' AND reconcile.attempts >= 3 AND "
      "commands.queued > 0 AND device.encoding = 'protobuf' AND "
      "liveness.last_seen < 5 AND connection.state = 'online'");
  CHECK(fixed->children.size() == 6);
  CHECK(std::get<QueryField>(fixed->children[0]->left).type == QueryField::Type::kText);
  CHECK(std::get<QueryField>(fixed->children[1]->left).type == QueryField::Type::kNumber);
  // Literals: quotes doubled inside strings, negative and exponent numbers, booleans.
  auto lit = parsed("tags.name = 'O''Brien' AND reported.t > -1.5e3 AND reported.on = FALSE");
  CHECK(std::get<std::string>(std::get<QueryLiteral>(lit->children[0]->right).value) == "O'Brien");
  CHECK(std::get<double>(std::get<QueryLiteral>(lit->children[1]->right).value) == -1500);
  CHECK_FALSE(std::get<bool>(std::get<QueryLiteral>(lit->children[2]->right).value));
}

TEST_CASE("errors name the column, counted in characters, and what was expected") {
  CHECK(error_of("reported.x = ") ==
        "invalid query at column 14: expected a field, a string, a number, TRUE or FALSE, found "
        "the end of the query");
  // 'ü' is two bytes and one character: the column after it counts it once.
  CHECK(error_of("tags.city = 'Zürich' AND").find("column 25") != std::string::npos);
  CHECK(error_of("tags.city = 'Zürich' version") ==
        "invalid query at column 22: expected AND, OR or the end of the query, found 'version'");
  CHECK(error_of("(id = 'a'").find("column 10: expected ')'") != std::string::npos);
  CHECK(error_of("id = 'a").find("column 6: unterminated string") != std::string::npos);
  CHECK(error_of("colour = 'red'").find("column 1: unknown field 'colour'") != std::string::npos);
  CHECK(error_of("reported = 1").find("needs a path") != std::string::npos);
  CHECK(error_of("id ~ 'a'").find("column 4: unexpected character '~'") != std::string::npos);
  CHECK(error_of("id 'a'").find("column 4: expected a comparison") != std::string::npos);
  CHECK(error_of("reported.x LIKE 3").find("column 17: expected a quoted pattern") !=
        std::string::npos);
  CHECK(error_of("'a' IN ('a')").find("expected a field before IN") != std::string::npos);
  CHECK(error_of("id IN ('a',)").find("column 12") != std::string::npos);
  CHECK(error_of("reported.x = 1e999").find("is not a number") != std::string::npos);
  CHECK(error_of(std::string("id = 'a\0b'", 11)).find("column 8: a string may not contain NUL") !=
        std::string::npos);
  CHECK(error_of("x NOT LIKE 'a'").find("unknown field") != std::string::npos);
  CHECK(error_of("id NOT LIKE 'a'").find("expected IN after NOT") != std::string::npos);
  const size_t over = kMaxQueryDepth + 1;
  CHECK(error_of(std::string(over, '(') + "id = 'a'" + std::string(over, ')'))
            .find("column " + std::to_string(over) + ": the query nests deeper than " +
                  std::to_string(kMaxQueryDepth) + " levels") != std::string::npos);
  std::string nots;
  for (int i = 0; i < 100; ++i) nots += "NOT ";
  CHECK(error_of(nots + "id = 'a'").find("nests deeper") != std::string::npos);
  CHECK(parse_query(std::string(kMaxQueryDepth, '(') + "id = 'a'" +
                    std::string(kMaxQueryDepth, ')')));
  const std::string big = "id IN (" + std::string(5000, ' ') + "'a')";
  CHECK(error_of(big).find("limited to 4096 bytes") != std::string::npos);
}

TEST_CASE("order_by and cursors") {
  auto o = parse_query_order("reported.temp DESC");
  REQUIRE(o);
  CHECK(o->descending);
  CHECK(o->field.path == std::vector<std::string>{"temp"});
  CHECK(parse_query_order("")->field.name == "id");
  CHECK_FALSE(parse_query_order("id sideways"));
  CHECK_FALSE(parse_query_order("nope"));
  for (const json& key : {json(), json(3), json(2.5), json("x y/z")}) {
    const QueryCursor c{key, "pump-1"};
    auto back = parse_cursor(cursor_text(c));
    REQUIRE(back);
    CHECK(back->key == key);
    CHECK(back->id == "pump-1");
  }
  CHECK_FALSE(parse_cursor("zz"));
  CHECK_FALSE(parse_cursor("7b7d"));  // {}
}
