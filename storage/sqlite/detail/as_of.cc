#include "storage/sqlite/detail/as_of.h"

namespace doppel::storage::detail {
namespace {

bool is_content(const std::string& kind) {
  return kind == "desired.updated" || kind == "reported.updated" || kind == "twin.created";
}

// The latest snapshot of `twin` whose `column` is at most (or, with `strict`, below) `bound`.
std::optional<twins::Snapshot> latest_snapshot(Database& db, const std::string& twin,
                                               const char* column, bool strict, int64_t bound) {
  const std::string sql = std::string("SELECT seq, step_seq, ts, version, state FROM snapshots ") +
                          "WHERE twin = ?1 AND " + column + (strict ? " < ?2" : " <= ?2") +
                          " ORDER BY seq DESC LIMIT 1";
  Statement st(db, sql.c_str());
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

// Calls `each(event, step_seq)` for `twin`'s events after `after_seq`, in order, while it
// returns true.
template <typename F>
void scan_events(Database& db, const std::string& twin, uint64_t after_seq, F each) {
  Statement st(db,
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

std::vector<twins::EventRecord> events_between(Database& db, const std::string& twin,
                                               uint64_t after, uint64_t upto) {
  std::vector<twins::EventRecord> out;
  scan_events(db, twin, after, [&](twins::EventRecord e, uint64_t) {
    if (e.seq > upto) return false;
    out.push_back(std::move(e));
    return true;
  });
  return out;
}

}  // namespace

twins::HistorySlice read_history_slice(Database& db, const std::string& twin,
                                       const twins::AsOf& at) {
  twins::HistorySlice slice;
  // The current incarnation starts at its oldest snapshot's write (older snapshots go with the
  // twin when it is deleted).
  Statement floor_st(db, "SELECT min(step_seq) FROM snapshots WHERE twin = ?1");
  floor_st.bind(1, std::string_view(twin));
  if (!floor_st.step() || floor_st.column_null(0)) return slice;
  const auto floor = static_cast<uint64_t>(floor_st.column_int(0));
  floor_st.reset();

  if (at.ts) {
    slice.base = latest_snapshot(db, twin, "ts", false, *at.ts);
    if (!slice.base) return slice;
    // A twin's ts never decreases, and the events of one write share it.
    scan_events(db, twin, slice.base->seq, [&](twins::EventRecord e, uint64_t) {
      if (e.ts > *at.ts) return false;
      slice.events.push_back(std::move(e));
      return true;
    });
    return slice;
  }

  // The write that made version N: its first event that changed content (or created the twin),
  // then the rest of that write. Versions only grow, so the scan starts after the last snapshot
  // taken before N.
  const uint64_t n = at.version.value_or(0);
  const auto before = latest_snapshot(db, twin, "version", true, static_cast<int64_t>(n));
  uint64_t step = 0;
  uint64_t target = 0;
  scan_events(db, twin, before ? before->seq : floor - 1,
              [&](twins::EventRecord e, uint64_t step_seq) {
                if (step != 0) {
                  if (step_seq != step) return false;
                  target = e.seq;
                  return true;
                }
                if (e.version > n) {
                  slice.before_creation = e.kind == "twin.created";
                  return false;
                }
                if (e.version == n && is_content(e.kind)) {
                  step = step_seq;
                  target = e.seq;
                }
                return true;
              });
  if (target == 0) return slice;
  slice.base = latest_snapshot(db, twin, "seq", false, static_cast<int64_t>(target));
  if (slice.base) slice.events = events_between(db, twin, slice.base->seq, target);
  return slice;
}

std::optional<Cut> make_cut(Database& db, const std::string& twin, uint64_t last) {
  auto base = latest_snapshot(db, twin, "seq", false, static_cast<int64_t>(last));
  if (!base || base->seq == last) return std::nullopt;
  twins::HistorySlice slice;
  slice.events = events_between(db, twin, base->seq, last);
  Cut cut;
  cut.twin = twin;
  cut.base_seq = base->seq;
  slice.base = std::move(base);
  uint64_t at_seq = 0;
  twins::Millis at_ts = 0;
  auto state = twins::rebuild(slice, &at_seq, &at_ts);
  if (!state) return std::nullopt;
  cut.snapshot.seq = last;
  cut.snapshot.step_seq = last;  // the events before it are gone
  cut.snapshot.ts = at_ts;
  cut.snapshot.version = state->version;
  cut.snapshot.state = twins::snapshot_text(*state);
  return cut;
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
