// Runs `where` through every statement a store builds from a fleet query — a first page and a
// later page in a JSON field's descending order, a count grouped by a JSON field, and (where the
// store has jobs) the job-target read — and returns the first failure. For the tests that hold the
// parser's limits to what the store can prepare (storage/query_test, fuzz_query).
#pragma once

#include <string>

#include <type_traits>

#include "twins/ports.h"
#include "twins/query.h"

namespace doppel::testing {

template <typename Store>
Status prepares_everywhere(Store& store, const twins::QueryExpr& where) {
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
  if constexpr (std::is_base_of_v<twins::JobStore, Store>) {
    if (auto r = store.matching_ids(where, "job-1", "", 1); !r) return r.status();
  }
  return Status::ok();
}

}  // namespace doppel::testing
