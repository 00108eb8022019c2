// A twin's rows in the SQLite schema (schema.h): the statements that write and read them, and
// the binding of a TwinRecord's columns. Shared by the store's writer and readers and by the
// migration that fills the query columns.
#pragma once

#include <optional>
#include <string>

#include "storage/sqlite/detail/sqlite.h"
#include "twins/record.h"

namespace doppel::storage::detail {

// Upserts a twin row from bind_record's parameters; the second leaves the indexed state columns
// (liveness, connection, reconcile) as they are (TwinRecord::states_changed false).
const std::string& upsert_twin_sql();
const std::string& upsert_twin_same_states_sql();
// Binds every column of `r` as the upserts' parameters ?1..?21.
void bind_record(Statement& st, const twins::TwinRecord& r);

// A twin's row (by ?1 = id) and its commands, as load_stored reads them.
extern const char* const kLoadTwinSql;
extern const char* const kLoadCommandsSql;
// One stored twin, read with `load_twin` (kLoadTwinSql) and `load_commands` (kLoadCommandsSql);
// nullopt if there is none.
std::optional<twins::StoredTwin> load_stored(Statement& load_twin, Statement& load_commands,
                                             const std::string& id);

}  // namespace doppel::storage::detail
