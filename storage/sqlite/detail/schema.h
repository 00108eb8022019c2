// The SQLite schema of the store and its migrations: tables for twins and their commands,
// credentials, the change feed (events, snapshots, gaps) and jobs. PRAGMA user_version records how
// many migrations ran.
#pragma once

#include <string>

#include "storage/sqlite/detail/sqlite.h"
#include "twins/status.h"

namespace doppel::storage::detail {

// The schema version this build writes.
int schema_version();

// Brings the database at `path`, open as `db`, to schema_version(), one migration per
// transaction. A database newer than this build is refused (kUnavailable: upgrade doppeld); a
// SQLite failure throws SqliteError.
Status migrate(Database& db, const std::string& path);

}  // namespace doppel::storage::detail
