// PostgresRuntimeRig: the twin runtime (sqlite_rig.h's RuntimeRig) over the PostgreSQL store, in
// a fresh database of one private server per test run (postgres_server.h). Test-only; the plain
// pass only.
#pragma once

#include "storage/postgres/postgres_store.h"
#include "tests/support/postgres_server.h"
#include "tests/support/sqlite_rig.h"

namespace doppel::testing {

struct PostgresRuntimeRig : RuntimeRig<storage::PostgresTwinStore> {
  // In a new database of the shared server.
  explicit PostgresRuntimeRig(std::vector<std::string> indexes = {})
      : PostgresRuntimeRig(shared_postgres().create_database(), std::move(indexes)) {}
  // In the database `uri` (a restart: what a rig there before left).
  explicit PostgresRuntimeRig(const std::string& uri, std::vector<std::string> indexes = {}) {
    storage::PostgresOptions o;
    o.uri = uri;
    o.indexes = std::move(indexes);
    start(storage::PostgresTwinStore::open(o, metrics));
  }
};

}  // namespace doppel::testing
