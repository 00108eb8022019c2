// Runs `where` through every statement SqliteTwinStore builds from a fleet query — a first page
// and a later page in a JSON field's descending order, a count grouped by a JSON field, and the
// job-target read — and returns the first failure. For the tests that hold the parser's limits to
// what the store can prepare (storage/query_test, fuzz_query).
#pragma once

#include <string>

#include "storage/sqlite/sqlite_store.h"
#include "twins/query.h"

namespace doppel::testing {

inline Status prepares_everywhere(storage::SqliteTwinStore& store, const twins::QueryExpr& where) {
  twins::TwinQuery q;
  q.where = &where;
  q.order = *twins::parse_query_order("reported.x desc");
  q.limit = 1;
  if (auto r = store.query(q); !r) return r.status();
  q.after = twins::QueryCursor{"k", "id-1"};
  if (auto r = store.query(q); !r) return r.status();
  q.order = *twins::parse_query_order("");
  if (auto r = store.query(q); !r) return r.status();
  if (auto r = store.count_where(where, *twins::parse_query_field("tags.site"), {}); !r) {
    return r.status();
  }
  if (auto r = store.count_where(where, std::nullopt, {}); !r) return r.status();
  if (auto r = store.matching_ids(where, "job-1", "", 1); !r) return r.status();
  return Status::ok();
}

}  // namespace doppel::testing
