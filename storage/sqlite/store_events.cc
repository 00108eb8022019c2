// SqliteTwinStore's change feed: event pages (from the recent tail or the table), bounds,
// retention with snapshots, and the slices as-of reads replay (sqlite_store.h).
#include <algorithm>
#include <utility>

#include "storage/sqlite/detail/as_of.h"
#include "storage/sqlite/detail/connections.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/log.h"

namespace doppel::storage {

Result<twins::EventPage> SqliteTwinStore::events(const twins::EventQuery& q) {
  if (auto page = tail_.page(q)) return std::move(*page);  // recent positions: from memory
  return with_reader("reading events", [&](Reader& reader) -> Result<twins::EventPage> {
    twins::EventPage page;
    page.scanned_to = q.after_seq;
    {
      Transaction tx(reader.db, false);
      // A twin filter goes to the index; a kind filter is applied here, over a bounded window.
      const twins::EventFilter& filter = q.filter;
      const size_t window = filter.kinds.empty() ? q.limit : std::max<size_t>(q.limit, 4096);
      std::string sql = "SELECT seq, ts, twin, kind, version, body FROM events WHERE seq > ?1";
      if (!filter.twins.empty()) {
        sql += " AND twin IN (";
        for (size_t i = 0; i < filter.twins.size(); ++i) {
          sql += (i ? ", ?" : "?") + std::to_string(i + 3);
        }
        sql += ")";
      }
      sql += " ORDER BY seq LIMIT ?2";
      Statement st(reader.db, sql.c_str());
      st.bind(1, static_cast<int64_t>(q.after_seq)).bind(2, static_cast<int64_t>(window));
      for (size_t i = 0; i < filter.twins.size(); ++i) {
        st.bind(static_cast<int>(i + 3), filter.twins[i]);
      }
      size_t rows = 0;
      while (page.events.size() < q.limit && st.step()) {
        ++rows;
        twins::EventRecord e;
        e.seq = static_cast<uint64_t>(st.column_int(0));
        page.scanned_to = e.seq;
        e.kind = st.column_text(3);
        if (!filter.matches_kind(e.kind)) continue;
        e.ts = st.column_int(1);
        e.twin = st.column_text(2);
        e.version = static_cast<uint64_t>(st.column_int(4));
        e.body = st.column_text(5);
        page.events.push_back(std::move(e));
      }
      st.reset();
      // Looked at everything there is: the reader may continue after the newest.
      if (rows < window && page.events.size() < q.limit) {
        page.scanned_to = std::max<uint64_t>(
            page.scanned_to,
            static_cast<uint64_t>(reader.db.query_int("SELECT coalesce(max(seq), 0) FROM events")));
      }
      // What the cap removed from inside what this page covers. (The recent tail never holds a
      // gap: it is emptied when events are pruned and refills after the newest seq then.)
      if (page.scanned_to > q.after_seq) {
        Statement gaps(reader.db,
                       "SELECT from_seq, to_seq, n, kind FROM event_gaps WHERE to_seq > ?1 AND "
                       "from_seq <= ?2 ORDER BY from_seq LIMIT 1000");
        gaps.bind(1, static_cast<int64_t>(q.after_seq))
            .bind(2, static_cast<int64_t>(page.scanned_to));
        while (gaps.step()) {
          twins::EventGap g;
          g.kind = gaps.column_text(3);
          if (!filter.matches_kind(g.kind)) continue;
          g.from_seq = static_cast<uint64_t>(gaps.column_int(0));
          g.to_seq = static_cast<uint64_t>(gaps.column_int(1));
          g.count = static_cast<uint64_t>(gaps.column_int(2));
          page.gaps.push_back(std::move(g));
        }
      }
      tx.commit();
    }
    return page;
  });
}

Result<twins::EventBounds> SqliteTwinStore::event_bounds() {
  return with_reader("reading the event bounds", [&](Reader& reader) -> Result<twins::EventBounds> {
    twins::EventBounds b;
    {
      Transaction tx(reader.db, false);
      b.oldest =
          static_cast<uint64_t>(reader.db.query_int("SELECT coalesce(min(seq), 0) FROM events"));
      b.newest =
          static_cast<uint64_t>(reader.db.query_int("SELECT coalesce(max(seq), 0) FROM events"));
      b.last_assigned = static_cast<uint64_t>(reader.db.query_int(
          "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"));
      tx.commit();
    }
    return b;
  });
}

Result<uint64_t> SqliteTwinStore::prune_events(twins::Millis before_ts, uint64_t max_reported) {
  std::lock_guard lock(prune_mu_);
  try {
    if (!pruner_) {
      pruner_ = std::make_unique<Database>(options_.path, SQLITE_OPEN_READWRITE);
      configure(*pruner_, options_.durability);
    }
    Database& db = *pruner_;
    uint64_t total = 0;
    constexpr int64_t kChunk = 2000;
    // One chunk: the events `select` yields (seq, twin, kind, ts; those at or after `cut_ts`
    // end it) are deleted, after each twin's state where its deleted events end is kept as a
    // snapshot. Snapshots are rebuilt before the write transaction, which therefore stays short
    // (the writer waits for it): only the pruner deletes events, so what was read stays valid.
    auto chunk = [&](Statement& select, twins::Millis cut_ts, bool record_gap) -> int64_t {
      std::vector<int64_t> seqs;
      std::map<std::string, uint64_t> last;  // per twin, its last event that goes
      int64_t reported = 0;
      while (select.step()) {
        if (select.column_int(3) >= cut_ts) break;
        seqs.push_back(select.column_int(0));
        last[select.column_text(1)] = static_cast<uint64_t>(seqs.back());
        reported += select.column_text(2) == "reported.updated" ? 1 : 0;
      }
      select.reset();
      if (seqs.empty()) return 0;
      std::vector<Cut> cuts;
      detail::SqliteHistoryRows rows(db);
      for (const auto& [twin, seq] : last) {
        if (auto cut = make_cut(rows, twin, seq)) cuts.push_back(std::move(*cut));
      }
      Transaction tx(db, true);
      for (const auto& cut : cuts) detail::write_cut(db, cut);
      for (const auto& [twin, seq] : last) detail::drop_snapshots_before(db, twin, seq);
      Statement del(db, "DELETE FROM events WHERE seq = ?1");
      for (int64_t seq : seqs) del.bind(1, seq).run();
      if (record_gap) {
        Statement gap(db,
                      "INSERT INTO event_gaps (from_seq, to_seq, n, kind) "
                      "VALUES (?1, ?2, ?3, 'reported.updated')");
        gap.bind(1, seqs.front())
            .bind(2, seqs.back())
            .bind(3, static_cast<int64_t>(seqs.size()))
            .run();
      }
      if (reported > 0) {
        Statement upd(db,
                      "UPDATE event_stats SET value = max(0, value - ?1) WHERE name = "
                      "'reported_events'");
        upd.bind(1, reported).run();
      }
      tx.commit();
      return static_cast<int64_t>(seqs.size());
    };
    // Oldest first: from the head of the log, while its events are older than the cut.
    {
      Statement head(db, "SELECT seq, twin, kind, ts FROM events ORDER BY seq LIMIT ?1");
      head.bind(1, kChunk);
      while (true) {
        const int64_t n = chunk(head, before_ts, false);
        total += static_cast<uint64_t>(n);
        if (n < kChunk) break;
      }
    }
    auto reported = static_cast<uint64_t>(
        db.query_int("SELECT value FROM event_stats WHERE name = 'reported_events'"));
    if (reported > max_reported) {
      Statement oldest(db,
                       "SELECT seq, twin, kind, ts FROM events WHERE kind = 'reported.updated' "
                       "ORDER BY seq LIMIT ?1");
      while (reported > max_reported) {
        oldest.bind(1, static_cast<int64_t>(std::min<uint64_t>(kChunk, reported - max_reported)));
        const int64_t n = chunk(oldest, INT64_MAX, true);
        total += static_cast<uint64_t>(n);
        if (n == 0) break;
        reported -= std::min(reported, static_cast<uint64_t>(n));
      }
    }
    // Gaps wholly before the oldest retained event are told by 410 / overflow instead.
    db.exec(
        "DELETE FROM event_gaps WHERE to_seq < (SELECT coalesce(min(seq), 9223372036854775807) "
        "FROM events)");
    if (total > 0) {
      // The in-memory tail may hold what went: readers use the table until it refills.
      tail_.clear();
    }
    return total;
  } catch (const std::exception& e) {
    pruner_.reset();
    return to_status(e, "pruning events");
  }
}

Result<twins::HistorySlice> SqliteTwinStore::history_slice(const std::string& id,
                                                           const twins::AsOf& at) {
  return with_reader([&] { return "reading the history of twin '" + id + "'"; },
                     [&](Reader& reader) -> Result<twins::HistorySlice> {
                       twins::HistorySlice slice;
                       {
                         Transaction tx(reader.db, false);
                         detail::SqliteHistoryRows rows(reader.db);
                         slice = read_history_slice(rows, id, at);
                         tx.commit();
                       }
                       return slice;
                     });
}

}  // namespace doppel::storage
