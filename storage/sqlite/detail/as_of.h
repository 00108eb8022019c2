// The SQLite side of as-of reads and of pruning with snapshots (storage/history_reads.h, which
// plans them): the three reads the plan makes, over the snapshots and events tables, and storing
// what the pruner carries past a cut. Callers hold the connection; SqliteError on failure.
#pragma once

#include <optional>
#include <string>

#include "storage/history_reads.h"
#include "storage/sqlite/detail/sqlite.h"
#include "twins/as_of.h"

namespace doppel::storage::detail {

// HistoryRows on `db` (inside one read transaction, so that the plan sees one state of the file).
class SqliteHistoryRows final : public HistoryRows {
 public:
  explicit SqliteHistoryRows(Database& db) : db_(db) {}
  std::optional<uint64_t> first_step(const std::string& twin) override;
  std::optional<twins::Snapshot> latest_snapshot(const std::string& twin, By by, bool strict,
                                                 int64_t bound) override;
  void scan_events(const std::string& twin, uint64_t after_seq, const EachEvent& each) override;

 private:
  Database& db_;
};

// Stores `cut` if its base snapshot still exists (the twin was not deleted meanwhile), then
// deletes the twin's snapshots before it. Inside the pruner's write transaction.
void write_cut(Database& db, const Cut& cut);
// Deletes `twin`'s snapshots before seq `last` (they cannot be replayed past a cut there).
void drop_snapshots_before(Database& db, const std::string& twin, uint64_t last);

}  // namespace doppel::storage::detail
