// Fleet queries (twins/query.h) as a SQL filter over the twins table, for every backend: the
// builder that walks the query is written once, here, and asks a Dialect for what differs between
// SQL engines (placeholders, how a JSON path is read and typed, pattern matching, booleans).
//
// Every comparison becomes a term that is never NULL — a type check joined to the comparison —
// so that AND, OR and NOT keep the language's two-valued logic (the reference evaluator,
// twins/query_eval.h, is the oracle both backends are tested against). A comparison of a field
// with a literal stays `<value> <op> <parameter>` as a term of its own, which is what lets an
// engine use an expression index on that field.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "twins/query.h"

namespace doppel::storage::sql {

// A parameter's value: a literal's (booleans as 0/1), or a sort key's.
using Value = std::variant<std::monostate, int64_t, double, std::string>;

struct Filter {
  std::string where;  // a boolean SQL expression over the twins table
  std::vector<Value> params;
};

// The families of values a comparison needs on both sides: numbers, strings, booleans.
enum class Family : char { kNumber = 'n', kString = 's', kBoolean = 'b' };

// What differs between engines. Every returned expression is over one row of the twins table.
class Dialect {
 public:
  virtual ~Dialect() = default;
  // The placeholder of parameter `n` (1-based), whose value is of `family`.
  virtual std::string placeholder(int n, Family family) const = 0;
  virtual std::string true_sql() const = 0;
  virtual std::string false_sql() const = 0;
  // A condition, never NULL, that `f` holds a value of `family`: false_sql() when it never can,
  // true_sql() when it always does.
  virtual std::string has_family(const twins::QueryField& f, Family family) const = 0;
  // `f`'s value where it holds one of `family`, as compared with a parameter of that family.
  virtual std::string value(const twins::QueryField& f, Family family) const = 0;
  // `a <op> b` when both hold values of one family (the term is false otherwise), never NULL.
  virtual std::string compare_fields(const twins::QueryField& a, const std::string& op,
                                     const twins::QueryField& b) const = 0;
  // `f` (a string) matches the pattern in `placeholder` (made by like_pattern).
  virtual std::string like(const twins::QueryField& f, const std::string& placeholder) const = 0;
  // The language's LIKE pattern ('%' any run, everything else itself, case-sensitive) as the
  // engine's.
  virtual std::string like_pattern(const std::string& pattern) const = 0;
  // A condition, never NULL, that `f` has a value (of any type).
  virtual std::string exists(const twins::QueryField& f) const = 0;
};

// The filter of `expr` in `dialect`; its parameters are numbered from `first_param`.
Filter build_filter(const twins::QueryExpr& expr, const Dialect& dialect, int first_param = 1);

// The name of the index --index keeps on `field`: readable, and unique ("reported.fw_x" and
// "reported.fw.x" differ in their hash).
std::string index_name(const twins::QueryField& field);

// A cursor's sort key (null, number or string) as a parameter value, and back.
Value value_of(const twins::json& v);
twins::json json_of(const Value& v);

}  // namespace doppel::storage::sql
