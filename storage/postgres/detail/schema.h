// The PostgreSQL store's schema and its migrations, recorded in doppel_schema_migrations and
// applied in one transaction at start (several nodes starting at once on a new database apply
// each step once: the transaction takes an advisory lock before anything else).
#pragma once

#include "storage/postgres/detail/pg.h"
#include "twins/status.h"

namespace doppel::storage::postgres {

// How many migrations this doppeld knows.
int schema_version();
// Brings the database up to schema_version(); kUnavailable if it is newer than this doppeld.
Status migrate(pg::Connection& db);

// The advisory lock (pg_advisory_xact_lock) the writer's and the pruner's write transactions
// take, so that they apply one after the other, as SQLite's single write lock makes them. A claim
// of the partitions takes it too: it waits for the commit in flight, and the writer reads the
// epochs after taking it, so no write lands under an epoch that is no longer current.
inline constexpr int64_t kWriteLock = 0x646f7070656c;  // "doppel"
// "BEGIN" and that lock, in one round trip.
inline constexpr const char* kBeginLocked = "BEGIN; SELECT pg_advisory_xact_lock(110429790561644)";
static_assert(kWriteLock == 110429790561644);

}  // namespace doppel::storage::postgres
