// Fleet queries in SQLite's SQL (storage/query_sql.h builds the filter; this is SQLite's dialect):
// a JSON field is json_extract(<column>, '<path>') with the path inlined, which is what lets SQLite
// use an expression index on that field (--index) or the indexes on the state columns.
#pragma once

#include <string>

#include "storage/query_sql.h"
#include "storage/sqlite/detail/sqlite.h"
#include "twins/query.h"

namespace doppel::storage::detail {

using SqlValue = sql::Value;
using SqlFilter = sql::Filter;
// A whole statement and its parameters (a page's SELECT, built around a filter).
struct SqlStatement {
  std::string sql;
  std::vector<SqlValue> params;
};

const sql::Dialect& sqlite_dialect();
// The filter of `expr`; its parameters are numbered from `first_param`.
inline SqlFilter query_filter(const twins::QueryExpr& expr, int first_param = 1) {
  return sql::build_filter(expr, sqlite_dialect(), first_param);
}
// The SQL value of a field (a column, or json_extract of a document), as ORDER BY, GROUP BY and
// the expression indexes use it.
std::string field_value_sql(const twins::QueryField& field);
// The JSON type of a JSON field's value (json_type), or NULL for the fixed ones.
std::string field_type_sql(const twins::QueryField& field);
// CREATE INDEX IF NOT EXISTS for `field` (with id, for ordered pages).
std::string index_sql(const twins::QueryField& field);

void bind_value(Statement& st, int index, const SqlValue& v);
SqlValue column_value(const Statement& st, int i);
using sql::json_of;
inline SqlValue sql_value_of(const twins::json& v) { return sql::value_of(v); }

}  // namespace doppel::storage::detail
