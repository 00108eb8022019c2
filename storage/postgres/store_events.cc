// PostgresTwinStore's change feed: event pages (from the recent tail or the table), bounds,
// retention with snapshots, and the slices as-of reads replay (postgres_store.h). The plans are
// the backend-neutral ones (storage/history_reads.h, storage/event_tail.h); the SQL is here.
#include <algorithm>
#include <map>
#include <utility>

#include "storage/history_reads.h"
#include "storage/postgres/detail/connections.h"
#include "storage/postgres/detail/schema.h"
#include "twins/log.h"

namespace doppel::storage {
namespace {

// HistoryRows on one connection, inside the caller's transaction.
class PgHistoryRows final : public HistoryRows {
 public:
  explicit PgHistoryRows(pg::Connection& db) : db_(db) {}

  std::optional<uint64_t> first_step(const std::string& twin) override {
    pg::Rows r =
        db_.must("SELECT min(step_seq) FROM snapshots WHERE twin = $1", pg::Params().text(twin));
    if (r.is_null(0, 0)) return std::nullopt;
    return static_cast<uint64_t>(r.integer(0, 0));
  }

  std::optional<twins::Snapshot> latest_snapshot(const std::string& twin, By by, bool strict,
                                                 int64_t bound) override {
    const char* column = by == By::kSeq ? "seq" : by == By::kTs ? "ts" : "version";
    pg::Rows r = db_.must(std::string("SELECT seq, step_seq, ts, version, state FROM snapshots ") +
                              "WHERE twin = $1 AND " + column + (strict ? " < $2" : " <= $2") +
                              " ORDER BY seq DESC LIMIT 1",
                          pg::Params().text(twin).integer(bound));
    if (r.size() == 0) return std::nullopt;
    twins::Snapshot s;
    s.seq = static_cast<uint64_t>(r.integer(0, 0));
    s.step_seq = static_cast<uint64_t>(r.integer(0, 1));
    s.ts = r.integer(0, 2);
    s.version = static_cast<uint64_t>(r.integer(0, 3));
    s.state = r.text(0, 4);
    return s;
  }

  void scan_events(const std::string& twin, uint64_t after_seq, const EachEvent& each) override {
    // In pages: a twin's history may be long, and the plan usually stops early.
    constexpr int64_t kPage = 256;
    uint64_t after = after_seq;
    while (true) {
      pg::Rows r = db_.must(
          "SELECT seq, ts, kind, version, body, coalesce(step_seq, seq) FROM events "
          "WHERE twin = $1 AND seq > $2 ORDER BY seq LIMIT $3",
          pg::Params().text(twin).integer(static_cast<int64_t>(after)).integer(kPage));
      for (size_t i = 0; i < r.size(); ++i) {
        twins::EventRecord e;
        e.seq = static_cast<uint64_t>(r.integer(i, 0));
        e.ts = r.integer(i, 1);
        e.twin = twin;
        e.kind = r.text(i, 2);
        e.version = static_cast<uint64_t>(r.integer(i, 3));
        e.body = r.text(i, 4);
        after = e.seq;
        if (!each(std::move(e), static_cast<uint64_t>(r.integer(i, 5)))) return;
      }
      if (static_cast<int64_t>(r.size()) < kPage) return;
    }
  }

 private:
  pg::Connection& db_;
};

constexpr const char* kReadOnly = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

}  // namespace

Result<twins::EventPage> PostgresTwinStore::events(const twins::EventQuery& q) {
  if (auto page = tail_.page(q)) return std::move(*page);  // recent positions: from memory
  return with_reader("reading events", [&](pg::Connection& db) -> Result<twins::EventPage> {
    twins::EventPage page;
    page.scanned_to = q.after_seq;
    db.must(kReadOnly);
    // A twin filter goes to the index; a kind filter is applied here, over a bounded window.
    const twins::EventFilter& filter = q.filter;
    const size_t window = filter.kinds.empty() ? q.limit : std::max<size_t>(q.limit, 4096);
    pg::Params p;
    p.integer(static_cast<int64_t>(q.after_seq)).integer(static_cast<int64_t>(window));
    std::string sql = "SELECT seq, ts, twin, kind, version, body FROM events WHERE seq > $1";
    if (!filter.twins.empty()) {
      pg::ArrayLiteral twins;
      for (const auto& t : filter.twins) twins.text(t);
      p.array(twins);
      sql += " AND twin = ANY($3::text[])";
    }
    pg::Rows r = db.must(sql + " ORDER BY seq LIMIT $2", p);
    size_t rows = 0;
    for (size_t i = 0; i < r.size() && page.events.size() < q.limit; ++i) {
      ++rows;
      twins::EventRecord e;
      e.seq = static_cast<uint64_t>(r.integer(i, 0));
      page.scanned_to = e.seq;
      e.kind = r.text(i, 3);
      if (!filter.matches_kind(e.kind)) continue;
      e.ts = r.integer(i, 1);
      e.twin = r.text(i, 2);
      e.version = static_cast<uint64_t>(r.integer(i, 4));
      e.body = r.text(i, 5);
      page.events.push_back(std::move(e));
    }
    // Looked at everything there is: the reader may continue after the newest.
    if (rows < window && page.events.size() < q.limit) {
      page.scanned_to = std::max<uint64_t>(
          page.scanned_to,
          static_cast<uint64_t>(db.must("SELECT coalesce(max(seq), 0) FROM events").integer(0, 0)));
    }
    // What the cap removed from inside what this page covers.
    if (page.scanned_to > q.after_seq) {
      pg::Rows gaps = db.must(
          "SELECT from_seq, to_seq, n, kind FROM event_gaps WHERE to_seq > $1 AND from_seq <= $2 "
          "ORDER BY from_seq LIMIT 1000",
          pg::Params()
              .integer(static_cast<int64_t>(q.after_seq))
              .integer(static_cast<int64_t>(page.scanned_to)));
      for (size_t i = 0; i < gaps.size(); ++i) {
        twins::EventGap g;
        g.kind = gaps.text(i, 3);
        if (!filter.matches_kind(g.kind)) continue;
        g.from_seq = static_cast<uint64_t>(gaps.integer(i, 0));
        g.to_seq = static_cast<uint64_t>(gaps.integer(i, 1));
        g.count = static_cast<uint64_t>(gaps.integer(i, 2));
        page.gaps.push_back(std::move(g));
      }
    }
    db.must("COMMIT");
    return page;
  });
}

Result<twins::EventBounds> PostgresTwinStore::event_bounds() {
  return with_reader("reading the event bounds",
                     [&](pg::Connection& db) -> Result<twins::EventBounds> {
                       pg::Rows r = db.must(
                           "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0), (SELECT value "
                           "FROM event_stats WHERE name = 'last_seq') FROM events");
                       twins::EventBounds b;
                       b.oldest = static_cast<uint64_t>(r.integer(0, 0));
                       b.newest = static_cast<uint64_t>(r.integer(0, 1));
                       b.last_assigned = static_cast<uint64_t>(r.integer(0, 2));
                       return b;
                     });
}

Result<uint64_t> PostgresTwinStore::prune_events(twins::Millis before_ts, uint64_t max_reported) {
  std::lock_guard lock(prune_mu_);
  try {
    if (!pruner_ || !pruner_->ok()) {
      auto db = pg::Connection::open(options_.uri);
      if (!db) return db.status();
      pruner_ = std::make_unique<pg::Connection>(std::move(*db));
    }
    pg::Connection& db = *pruner_;
    uint64_t total = 0;
    constexpr int64_t kChunk = 2000;
    // One chunk: the events `select` yields (seq, twin, kind, ts; those at or after `cut_ts` end
    // it) are deleted, after each twin's state where its deleted events end is kept as a
    // snapshot. Snapshots are rebuilt before the write transaction, which therefore stays short
    // (the writer waits for its lock): only the pruner deletes events, so what was read stays
    // valid.
    auto chunk = [&](const std::string& select, const pg::Params& params, twins::Millis cut_ts,
                     bool record_gap) -> int64_t {
      pg::ArrayLiteral seqs;
      int64_t first = 0, last_seq = 0;
      std::map<std::string, uint64_t> last;  // per twin, its last event that goes
      int64_t reported = 0;
      pg::Rows r = db.must(select, params);
      for (size_t i = 0; i < r.size(); ++i) {
        if (r.integer(i, 3) >= cut_ts) break;
        last_seq = r.integer(i, 0);
        if (first == 0) first = last_seq;
        seqs.integer(last_seq);
        last[r.text(i, 1)] = static_cast<uint64_t>(last_seq);
        reported += r.text(i, 2) == "reported.updated" ? 1 : 0;
      }
      if (seqs.empty()) return 0;
      std::vector<Cut> cuts;
      {
        db.must(kReadOnly);
        PgHistoryRows rows(db);
        for (const auto& [twin, seq] : last) {
          if (auto cut = make_cut(rows, twin, seq)) cuts.push_back(std::move(*cut));
        }
        db.must("COMMIT");
      }
      db.must("BEGIN");
      db.must("SELECT pg_advisory_xact_lock($1)", pg::Params().integer(postgres::kWriteLock));
      for (const auto& cut : cuts) {
        db.must(
            "INSERT INTO snapshots (twin, seq, step_seq, ts, version, state) "
            "SELECT $1, $2, $3, $4, $5, $6 "
            "WHERE EXISTS (SELECT 1 FROM snapshots WHERE twin = $1 AND seq = $7) "
            "ON CONFLICT (twin, seq) DO UPDATE SET step_seq = excluded.step_seq, "
            "ts = excluded.ts, version = excluded.version, state = excluded.state",
            pg::Params()
                .text(cut.twin)
                .integer(static_cast<int64_t>(cut.snapshot.seq))
                .integer(static_cast<int64_t>(cut.snapshot.step_seq))
                .integer(cut.snapshot.ts)
                .integer(static_cast<int64_t>(cut.snapshot.version))
                .text(cut.snapshot.state)
                .integer(static_cast<int64_t>(cut.base_seq)));
      }
      {
        pg::ArrayLiteral twins, lasts;
        for (const auto& [twin, seq] : last) {
          twins.text(twin);
          lasts.integer(static_cast<int64_t>(seq));
        }
        db.must(
            "DELETE FROM snapshots s USING unnest($1::text[], $2::bigint[]) AS c(twin, seq) "
            "WHERE s.twin = c.twin AND s.seq < c.seq",
            pg::Params().array(twins).array(lasts));
      }
      const uint64_t deleted =
          db.must("DELETE FROM events WHERE seq = ANY($1::bigint[])", pg::Params().array(seqs))
              .affected();
      if (record_gap) {
        db.must(
            "INSERT INTO event_gaps (from_seq, to_seq, n, kind) "
            "VALUES ($1, $2, $3, 'reported.updated')",
            pg::Params().integer(first).integer(last_seq).integer(static_cast<int64_t>(deleted)));
      }
      if (reported > 0) {
        db.must(
            "UPDATE event_stats SET value = greatest(0, value - $1) "
            "WHERE name = 'reported_events'",
            pg::Params().integer(reported));
      }
      db.must("COMMIT");
      return static_cast<int64_t>(seqs.size());
    };
    // Oldest first: from the head of the log, while its events are older than the cut.
    while (true) {
      const int64_t n = chunk("SELECT seq, twin, kind, ts FROM events ORDER BY seq LIMIT $1",
                              pg::Params().integer(kChunk), before_ts, false);
      total += static_cast<uint64_t>(n);
      if (n < kChunk) break;
    }
    auto reported = static_cast<uint64_t>(
        db.must("SELECT value FROM event_stats WHERE name = 'reported_events'").integer(0, 0));
    while (reported > max_reported) {
      const int64_t n = chunk(
          "SELECT seq, twin, kind, ts FROM events WHERE kind = 'reported.updated' "
          "ORDER BY seq LIMIT $1",
          pg::Params().integer(
              static_cast<int64_t>(std::min<uint64_t>(kChunk, reported - max_reported))),
          INT64_MAX, true);
      total += static_cast<uint64_t>(n);
      if (n == 0) break;
      reported -= std::min(reported, static_cast<uint64_t>(n));
    }
    // Gaps wholly before the oldest retained event are told by 410 / overflow instead.
    db.must(
        "DELETE FROM event_gaps WHERE to_seq < (SELECT coalesce(min(seq), 9223372036854775807) "
        "FROM events)");
    // The in-memory tail may hold what went: readers use the table until it refills.
    if (total > 0) tail_.clear();
    return total;
  } catch (const pg::Failure& f) {
    pruner_.reset();
    return Status(f.status().code(), "pruning events: " + f.status().message());
  }
}

Result<twins::HistorySlice> PostgresTwinStore::history_slice(const std::string& id,
                                                             const twins::AsOf& at) {
  return with_reader("reading the history of twin '" + id + "'",
                     [&](pg::Connection& db) -> Result<twins::HistorySlice> {
                       db.must(kReadOnly);
                       PgHistoryRows rows(db);
                       twins::HistorySlice slice = read_history_slice(rows, id, at);
                       db.must("COMMIT");
                       return slice;
                     });
}

}  // namespace doppel::storage
