// Fleet queries in PostgreSQL's SQL (storage/query_sql.h builds the filter; this is PostgreSQL's
// dialect). A JSON field is read from the document as jsonb (doppel_doc(<column>) -> 'a' -> 'b',
// the keys inlined, so that --index can keep an expression index on it); comparisons are typed by
// jsonb_typeof, text compares bytewise (COLLATE "C", as SQLite does), and the sort order of a page
// is SQLite's — missing first, then numbers (booleans as 0 and 1), then strings — as a key of
// three columns (rank, number, text) that keyset cursors compare as one row value.
#pragma once

#include <string>
#include <vector>

#include "storage/postgres/detail/pg.h"
#include "storage/query_sql.h"
#include "twins/query.h"

namespace doppel::storage::postgres {

const sql::Dialect& postgres_dialect();
inline sql::Filter query_filter(const twins::QueryExpr& expr, int first_param = 1) {
  return sql::build_filter(expr, postgres_dialect(), first_param);
}

// Appends a filter's parameter to `p` (as text, which its placeholder's cast reads).
void add_param(pg::Params& p, const sql::Value& v);

// A field's value as a group key (jsonb for a document's field, the column for a fixed one).
std::string group_value_sql(const twins::QueryField& field);
// The three sort-key expressions of `field`'s value: rank (0 missing, 1 number or boolean, 2
// string or other), number, text; never NULL.
std::vector<std::string> sort_key_sql(const twins::QueryField& field);
// CREATE INDEX IF NOT EXISTS statements for `field` (--index).
std::vector<std::string> index_sql(const twins::QueryField& field);

}  // namespace doppel::storage::postgres
