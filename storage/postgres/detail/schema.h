// The PostgreSQL store's schema and its migrations, recorded in doppel_schema_migrations and
// applied in one transaction at start (several nodes starting at once apply each step once: the
// transaction locks that table first).
#pragma once

#include "storage/postgres/detail/pg.h"
#include "twins/status.h"

namespace doppel::storage::postgres {

// How many migrations this doppeld knows.
int schema_version();
// Brings the database up to schema_version(); kUnavailable if it is newer than this doppeld.
Status migrate(pg::Connection& db);

// The advisory lock (pg_advisory_xact_lock) the writer's and the pruner's write transactions
// take, so that they apply one after the other, as SQLite's single write lock makes them.
inline constexpr int64_t kWriteLock = 0x646f7070656c;  // "doppel"

}  // namespace doppel::storage::postgres
