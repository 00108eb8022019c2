// Fleet queries as SQL over the twins table (twins/query.h), for storage/ only.
//
// Every comparison becomes a term that is never NULL — a type check joined to the comparison —
// so that AND, OR and NOT keep the language's two-valued logic. A comparison of a JSON field
// with a literal keeps `json_extract(<column>, '<path>') <op> ?` as a term of its own (the path
// inlined, the value bound), which is what lets SQLite use an expression index on that field
// (--index) or the indexes on liveness, connection and reconcile states.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "storage/sqlite/detail/sqlite.h"
#include "twins/query.h"

namespace doppel::storage::detail {

using SqlValue = std::variant<std::monostate, int64_t, double, std::string>;

struct SqlFilter {
  std::string where;  // a boolean SQL expression over the twins table
  std::vector<SqlValue> params;
};
// A whole statement and its parameters (a page's SELECT, built around a filter).
struct SqlStatement {
  std::string sql;
  std::vector<SqlValue> params;
};

// The filter of `expr`; its parameters are numbered from `first_param`.
SqlFilter query_filter(const twins::QueryExpr& expr, int first_param = 1);
// The SQL value of a field (a column, or json_extract of a document), as ORDER BY, GROUP BY and
// the expression indexes use it.
std::string field_value_sql(const twins::QueryField& field);
// The JSON type of a JSON field's value (json_type), or NULL for the fixed ones.
std::string field_type_sql(const twins::QueryField& field);
// CREATE INDEX IF NOT EXISTS for `field` (with id, for ordered pages).
std::string index_sql(const twins::QueryField& field);

void bind_value(Statement& st, int index, const SqlValue& v);
SqlValue column_value(const Statement& st, int i);
// A cursor's sort key (null, number or string) as a SQL value, and back.
SqlValue sql_value_of(const twins::json& v);
twins::json json_of(const SqlValue& v);

}  // namespace doppel::storage::detail
