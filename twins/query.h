// Fleet queries (README, "Fleet queries"): the expression language of GET /v1/twins?q= and
// GET /v1/fleet/count, parsed into a tree the store turns into SQL over its twins table.
//
//   expr       := or
//   or         := and ("OR" and)*
//   and        := unary ("AND" unary)*
//   unary      := "NOT" unary | primary
//   primary    := "(" expr ")" | "EXISTS" "(" field ")" | operand comparison
//   comparison := ("=" | "!=" | "<" | "<=" | ">" | ">=") operand
//               | ["NOT"] "IN" "(" literal ("," literal)* ")"
//               | "LIKE" string
//   operand    := field | literal
//   literal    := 'single-quoted string' ('' is a quote) | number | TRUE | FALSE
//
// Keywords are case-insensitive. Fields: id, version, desired_version, reported_version,
// created_at, updated_at, liveness.state, liveness.last_seen, connection.state, reconcile.state,
// reconcile.attempts, commands.queued, commands.sent, device.encoding, device.dialect and
// tags.<path>, desired.<path>, reported.<path> (path segments of letters, digits, '_', '-' and ':',
// joined by dots). Semantics: numbers compare as numbers, strings as strings (bytewise), booleans
// only with booleans (false < true); a comparison with a missing value or one of another type is
// false and NOT inverts that (two-valued logic). LIKE is case-sensitive; '%' matches any run of
// characters, every other character only itself.
//
// Pure; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "twins/document.h"
#include "twins/status.h"

namespace doppel::twins {

inline constexpr size_t kMaxQueryBytes = 4096;
// Parentheses and NOTs nest at most this deep. The bound is what every store's SQL compiler
// prepares with room to spare (SQLite's parser stack holds about 100 entries): a query the parser
// accepts never fails to prepare (tests/storage/query_test.cc checks the deepest of each shape,
// fuzz_query every query it accepts).
inline constexpr int kMaxQueryDepth = 20;

// A field of the twin: a fixed one (its column), or a path into a JSON document.
struct QueryField {
  enum class Doc { kNone, kTags, kDesired, kReported };
  Doc doc = Doc::kNone;
  std::string name;               // the field as written ("reported.fw.major")
  std::vector<std::string> path;  // within the document (doc != kNone)
  // Fixed fields: the type of their values.
  enum class Type { kText, kNumber, kJson };
  Type type = Type::kJson;
};

struct QueryLiteral {
  std::variant<std::string, double, bool> value;
};

struct QueryExpr;
using QueryExprPtr = std::unique_ptr<QueryExpr>;

struct QueryExpr {
  enum class Op {
    kAnd,
    kOr,
    kNot,
    kEq,
    kNe,
    kLt,
    kLe,
    kGt,
    kGe,
    kIn,
    kLike,
    kExists,
    kTrue,  // an empty query: every twin
  };
  Op op = Op::kTrue;
  std::vector<QueryExprPtr> children;  // kAnd, kOr (2+), kNot (1)
  // Comparisons: left and right operands (a field or a literal each); kIn: `field` and `list`;
  // kLike: `field` and the pattern; kExists: `field`.
  std::variant<QueryField, QueryLiteral> left, right;
  std::vector<QueryLiteral> list;
  std::string pattern;
};

// Parses `text` (kMaxQueryBytes at most). An error is kInvalidArgument whose message names the
// 1-based column (in Unicode characters) and what was expected there. An empty text is kTrue.
Result<QueryExprPtr> parse_query(std::string_view text);

// A field name as the query language spells it (for order_by, group_by, fields=); nullopt with
// the reason when it is none.
Result<QueryField> parse_query_field(std::string_view name);

// order_by: a field, ascending unless `descending`.
struct QueryOrder {
  QueryField field{QueryField::Doc::kNone, "id", {}, QueryField::Type::kText};
  bool descending = false;
};
// "<field> [asc|desc]"; empty: by id, ascending.
Result<QueryOrder> parse_query_order(std::string_view text);

// Where a page ended: the last twin's sort key (null, a number or a string) and id.
struct QueryCursor {
  json key;
  std::string id;
};
// "" for none; the cursor as URL-safe text, and back (kInvalidArgument when it is not one).
std::string cursor_text(const QueryCursor& cursor);
Result<QueryCursor> parse_cursor(std::string_view text);

// A page of twins matching `where`, in `order` then by id, after `after`.
// What one fleet read may cost: a store stops it at `deadline` (kTimeout), and a grouped count
// keeps at most `max_groups` groups (the largest; FleetCount::truncated says some were left out).
struct ReadBudget {
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  size_t max_groups = SIZE_MAX;
};

struct TwinQuery {
  const QueryExpr* where = nullptr;
  QueryOrder order;
  size_t limit = 100;
  std::optional<QueryCursor> after;
  ReadBudget budget;
};

struct CountGroup {
  json value;  // the field's value (null: missing)
  uint64_t count = 0;
};
struct FleetCount {
  uint64_t count = 0;
  std::vector<CountGroup> groups;  // with group_by: one per value, largest first
  bool truncated = false;          // more groups than ReadBudget::max_groups: the smallest left out
};

}  // namespace doppel::twins
