#include "storage/sqlite/detail/as_of.h"

namespace doppel::storage::detail {

std::optional<uint64_t> SqliteHistoryRows::first_step(const std::string& twin) {
  Statement st(db_, "SELECT min(step_seq) FROM snapshots WHERE twin = ?1");
  st.bind(1, std::string_view(twin));
  if (!st.step() || st.column_null(0)) return std::nullopt;
  return static_cast<uint64_t>(st.column_int(0));
}

std::optional<twins::Snapshot> SqliteHistoryRows::latest_snapshot(const std::string& twin, By by,
                                                                  bool strict, int64_t bound) {
  const char* column = by == By::kSeq ? "seq" : by == By::kTs ? "ts" : "version";
  const std::string sql = std::string("SELECT seq, step_seq, ts, version, state FROM snapshots ") +
                          "WHERE twin = ?1 AND " + column + (strict ? " < ?2" : " <= ?2") +
                          " ORDER BY seq DESC LIMIT 1";
  Statement st(db_, sql.c_str());
  st.bind(1, std::string_view(twin)).bind(2, bound);
  if (!st.step()) return std::nullopt;
  twins::Snapshot s;
  s.seq = static_cast<uint64_t>(st.column_int(0));
  s.step_seq = static_cast<uint64_t>(st.column_int(1));
  s.ts = st.column_int(2);
  s.version = static_cast<uint64_t>(st.column_int(3));
  s.state = st.column_text(4);
  return s;
}

void SqliteHistoryRows::scan_events(const std::string& twin, uint64_t after_seq,
                                    const EachEvent& each) {
  Statement st(db_,
               "SELECT seq, ts, kind, version, body, coalesce(step_seq, seq) FROM events "
               "WHERE twin = ?1 AND seq > ?2 ORDER BY seq");
  st.bind(1, std::string_view(twin)).bind(2, static_cast<int64_t>(after_seq));
  while (st.step()) {
    twins::EventRecord e;
    e.seq = static_cast<uint64_t>(st.column_int(0));
    e.ts = st.column_int(1);
    e.twin = twin;
    e.kind = st.column_text(2);
    e.version = static_cast<uint64_t>(st.column_int(3));
    e.body = st.column_text(4);
    if (!each(std::move(e), static_cast<uint64_t>(st.column_int(5)))) break;
  }
}

void write_cut(Database& db, const Cut& cut) {
  Statement st(db,
               "INSERT OR REPLACE INTO snapshots (twin, seq, step_seq, ts, version, state) "
               "SELECT ?1, ?2, ?3, ?4, ?5, ?6 "
               "WHERE EXISTS (SELECT 1 FROM snapshots WHERE twin = ?1 AND seq = ?7)");
  st.bind(1, std::string_view(cut.twin))
      .bind(2, static_cast<int64_t>(cut.snapshot.seq))
      .bind(3, static_cast<int64_t>(cut.snapshot.step_seq))
      .bind(4, cut.snapshot.ts)
      .bind(5, static_cast<int64_t>(cut.snapshot.version))
      .bind(6, std::string_view(cut.snapshot.state))
      .bind(7, static_cast<int64_t>(cut.base_seq))
      .run();
}

void drop_snapshots_before(Database& db, const std::string& twin, uint64_t last) {
  Statement st(db, "DELETE FROM snapshots WHERE twin = ?1 AND seq < ?2");
  st.bind(1, std::string_view(twin)).bind(2, static_cast<int64_t>(last)).run();
}

}  // namespace doppel::storage::detail
