// The SQL side of as-of reads and of pruning with snapshots (twins/as_of.h), for storage/ only:
// finding the snapshot and events an as-of read needs, and carrying a twin's state past the
// point where the pruner cuts its events. Callers hold the connection; SqliteError on failure.
#pragma once

#include <optional>
#include <string>

#include "storage/sqlite/detail/sqlite.h"
#include "twins/as_of.h"

namespace doppel::storage::detail {

// The slice an as-of read of `twin` needs (twins::HistorySlice), read on `db` (inside one read
// transaction, so that it sees one state of the file).
twins::HistorySlice read_history_slice(Database& db, const std::string& twin,
                                       const twins::AsOf& at);

// A snapshot the pruner writes before it deletes `twin`'s events up to `snapshot.seq`: the
// state there, rebuilt from the snapshot `base_seq` and the events after it.
struct Cut {
  std::string twin;
  uint64_t base_seq = 0;
  twins::Snapshot snapshot;
};
// The twin's state right after its event `last`, if it has a snapshot at or before it and every
// event in between (read-only; the pruner writes it later with write_cut). Nullopt: nothing to
// carry (an earlier incarnation's events, or an unreadable gap).
std::optional<Cut> make_cut(Database& db, const std::string& twin, uint64_t last);
// Stores `cut` if its base snapshot still exists (the twin was not deleted meanwhile), then
// deletes the twin's snapshots before it. Inside the pruner's write transaction.
void write_cut(Database& db, const Cut& cut);
// Deletes `twin`'s snapshots before seq `last` (they cannot be replayed past a cut there).
void drop_snapshots_before(Database& db, const std::string& twin, uint64_t last);

}  // namespace doppel::storage::detail
