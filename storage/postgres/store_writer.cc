// PostgresTwinStore's writer thread: a group commit as one transaction of multi-row statements
// (postgres_store.h).
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "storage/batch_plan.h"
#include "storage/postgres/detail/connections.h"
#include "storage/postgres/detail/schema.h"
#include "twins/log.h"

namespace doppel::storage {

namespace postgres {
namespace {

std::string upsert_sql(bool rewrite_states) {
  std::string names, arrays, updates;
  int i = 0;
  for (const RowColumn& c : twin_row_columns()) {
    const char* type = c.type == RowColumn::Type::kText    ? "text[]"
                       : c.type == RowColumn::Type::kBytes ? "bytea[]"
                                                           : "bigint[]";
    names += std::string(i > 0 ? ", " : "") + c.name;
    arrays += std::string(i > 0 ? ", " : "") + "$" + std::to_string(i + 1) + "::" + type;
    if (i > 0 && (rewrite_states || !c.state)) {
      updates += std::string(updates.empty() ? "" : ", ") + c.name + " = excluded." + c.name;
    }
    ++i;
  }
  return "INSERT INTO twins (" + names + ") SELECT * FROM unnest(" + arrays +
         ") ON CONFLICT (id) DO UPDATE SET " + updates;
}

}  // namespace

const std::string& upsert_twins_sql(bool rewrite_states) {
  static const std::string kAll = upsert_sql(true);
  static const std::string kSameStates = upsert_sql(false);
  return rewrite_states ? kAll : kSameStates;
}

}  // namespace postgres

void PostgresTwinStore::Writer::TwinColumns::add(const twins::TwinRecord& r) {
  const auto values = twin_row_values(r);
  for (size_t i = 0; i < kTwinRowColumns; ++i) {
    const RowValue& v = values[i];
    pg::ArrayLiteral& a = columns[i];
    if (v.null) {
      a.null();
      continue;
    }
    switch (twin_row_columns()[i].type) {
      case RowColumn::Type::kInteger:
        a.integer(v.integer);
        break;
      case RowColumn::Type::kText:
        a.text(v.text);
        break;
      case RowColumn::Type::kBytes:
        a.bytes(v.text);
        break;
    }
  }
  ++rows;
}

void PostgresTwinStore::Writer::TwinColumns::clear() {
  for (auto& a : columns) a.clear();
  rows = 0;
}

pg::Params PostgresTwinStore::Writer::TwinColumns::params() const {
  pg::Params p;
  for (const auto& a : columns) p.array(a);
  return p;
}

namespace {

// One table's rows of a batch, as one array per column.
template <size_t N>
struct Columns {
  std::array<pg::ArrayLiteral, N> columns;
  bool empty() const { return columns[0].empty(); }
  pg::Params params() const {
    pg::Params p;
    for (const auto& a : columns) p.array(a);
    return p;
  }
};

// What one batch does to the tables, each twin's writes folded in order: a delete drops what the
// batch had planned for that twin before it (its rows, commands and snapshots), as the delete
// statements run first.
struct BatchRows {
  std::vector<std::string_view> deleted;
  Columns<7> events;     // seq, ts, twin, kind, version, body, step_seq
  Columns<6> snapshots;  // twin, seq, step_seq, ts, version, state
  // The final state of each command the batch touches: a row to upsert, or nullopt to delete.
  std::map<std::pair<std::string_view, uint64_t>, std::optional<const twins::CommandRecord*>>
      commands;
  // Snapshots per twin until the statements are built (a later delete drops them).
  std::unordered_map<std::string_view, std::vector<std::pair<const twins::TwinWrite*, uint64_t>>>
      twin_snapshots;
};

}  // namespace

void PostgresTwinStore::writer_loop() {
  GroupCommitter::Batch batch;
  BatchPlan plan;
  Writer::TwinColumns all_states, same_states;
  std::vector<twins::EventRecord> committed_events;  // of the current batch, with their seqs
  Writer& w = *writer_;
  while (committer_.take(batch, options_.max_batch, /*wait=*/true)) {
    std::vector<Status>& statuses = batch.statuses;
    const size_t n = batch.ops.size();
    const auto started = std::chrono::steady_clock::now();
    committed_events.clear();
    uint64_t seq = last_event_seq_.load();
    try {
      connect_writer();
      for (size_t i = 0; i < n; ++i) {
        const twins::TwinWrite* tw = batch.ops[i].twin();
        if (statuses[i] && (tw == nullptr || !tw->executions.empty())) {
          committer_.fail_one(
              batch, i,
              Status(StatusCode::kUnavailable,
                     "jobs are not stored on PostgreSQL yet (issue #20); use the SQLite store"));
        }
      }
      plan.make(batch);
      BatchRows rows;
      all_states.clear();
      same_states.clear();
      int64_t reported = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!statuses[i]) continue;
        const twins::TwinWrite* tw = batch.ops[i].twin();
        // Every event, in order: group commit coalesces a twin's rows, never its events.
        uint64_t step_first = 0;
        for (const twins::EventRecord& e : tw->events) {
          ++seq;
          auto& c = rows.events.columns;
          c[0].integer(static_cast<int64_t>(seq));
          c[1].integer(e.ts);
          c[2].text(e.twin);
          c[3].text(e.kind);
          c[4].integer(static_cast<int64_t>(e.version));
          c[5].text(e.body);
          if (step_first == 0) {
            c[6].null();
            step_first = seq;
          } else {
            c[6].integer(static_cast<int64_t>(step_first));
          }
          reported += e.kind == "reported.updated" ? 1 : 0;
          committed_events.push_back(e);
          committed_events.back().seq = seq;
        }
        const std::string_view id = tw->id;
        if (tw->delete_twin) {
          rows.deleted.push_back(id);
          rows.twin_snapshots.erase(id);
          for (auto it = rows.commands.lower_bound({id, 0});
               it != rows.commands.end() && it->first.first == id;) {
            it = rows.commands.erase(it);
          }
          continue;
        }
        if (!tw->snapshot.empty() && !tw->events.empty()) {
          rows.twin_snapshots[id].emplace_back(tw, seq);
        }
        if (tw->twin && plan.carries_row(i, id)) {
          (plan.states_changed(id) ? all_states : same_states).add(*tw->twin);
        }
        for (const auto& c : tw->upsert_commands) rows.commands[{id, c.seq}] = &c;
        for (uint64_t s : tw->delete_commands) rows.commands[{id, s}] = std::nullopt;
      }
      for (const auto& [id, list] : rows.twin_snapshots) {
        for (const auto& [tw, last] : list) {
          auto& c = rows.snapshots.columns;
          c[0].text(id);
          c[1].integer(static_cast<int64_t>(last));
          c[2].integer(static_cast<int64_t>(last + 1 - tw->events.size()));
          c[3].integer(tw->events.back().ts);
          c[4].integer(static_cast<int64_t>(tw->events.back().version));
          c[5].text(tw->snapshot);
        }
      }

      pg::Connection& db = *w.db;
      db.must("BEGIN");
      db.must("SELECT pg_advisory_xact_lock($1)", pg::Params().integer(postgres::kWriteLock));
      if (!rows.deleted.empty()) {
        pg::ArrayLiteral ids;
        for (auto id : rows.deleted) ids.text(id);
        const pg::Params p = pg::Params().array(ids);
        db.must("DELETE FROM twins WHERE id = ANY($1::text[])", p);
        db.must("DELETE FROM commands WHERE twin_id = ANY($1::text[])", p);
        db.must("DELETE FROM snapshots WHERE twin = ANY($1::text[])", p);
      }
      if (!rows.events.empty()) {
        db.must(
            "INSERT INTO events (seq, ts, twin, kind, version, body, step_seq) SELECT * FROM "
            "unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], "
            "$7::bigint[])",
            rows.events.params());
        db.must(
            "UPDATE event_stats SET value = CASE name WHEN 'last_seq' THEN $1 "
            "ELSE value + $2 END WHERE name IN ('last_seq', 'reported_events')",
            pg::Params().integer(static_cast<int64_t>(seq)).integer(reported));
      }
      if (!rows.snapshots.empty()) {
        db.must(
            "INSERT INTO snapshots (twin, seq, step_seq, ts, version, state) SELECT * FROM "
            "unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], "
            "$6::text[]) ON CONFLICT (twin, seq) DO UPDATE SET step_seq = excluded.step_seq, "
            "ts = excluded.ts, version = excluded.version, state = excluded.state",
            rows.snapshots.params());
      }
      if (all_states.rows > 0) db.must(postgres::upsert_twins_sql(true), all_states.params());
      if (same_states.rows > 0) db.must(postgres::upsert_twins_sql(false), same_states.params());
      if (!rows.commands.empty()) {
        Columns<2> gone;
        Columns<5> put;
        for (const auto& [key, c] : rows.commands) {
          if (!c) {
            gone.columns[0].text(key.first);
            gone.columns[1].integer(static_cast<int64_t>(key.second));
            continue;
          }
          put.columns[0].text(key.first);
          put.columns[1].integer(static_cast<int64_t>(key.second));
          put.columns[2].text((*c)->id);
          put.columns[3].text((*c)->status);
          put.columns[4].bytes((*c)->body);
        }
        if (!gone.empty()) {
          db.must(
              "DELETE FROM commands WHERE (twin_id, seq) IN (SELECT * FROM unnest($1::text[], "
              "$2::bigint[]))",
              gone.params());
        }
        if (!put.empty()) {
          db.must(
              "INSERT INTO commands (twin_id, seq, id, status, body) SELECT * FROM "
              "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[]) "
              "ON CONFLICT (twin_id, seq) DO UPDATE SET id = excluded.id, "
              "status = excluded.status, body = excluded.body",
              put.params());
        }
      }
      if (fail_next_commits_.load() > 0) {
        fail_next_commits_.fetch_sub(1);
        throw pg::Failure(Status(StatusCode::kUnavailable, "injected commit failure (test hook)"));
      }
      db.must("COMMIT");
      if (!committed_events.empty()) {
        // The newest seq first: a reader that has seen an event in the tail may resume after
        // it at once, and the feed refuses positions past last_event_seq().
        last_event_seq_.store(seq);
        tail_.append(committed_events);
      }
      commit_metrics_.committed(n, committed_events.size());
    } catch (const pg::Failure& f) {
      committed_events.clear();  // rolled back: nobody hears of them
      if (w.db && w.db->ok()) (void)w.db->exec("ROLLBACK");
      const Status failed(f.status().code(), "group commit of " + std::to_string(n) +
                                                 " writes: " + f.status().message());
      commit_metrics_.failed();
      log_error("store: " + failed.to_string() +
                "; the twins it carried reload their committed state");
      committer_.fail(batch, failed);
    }
    commit_metrics_.batch(
        n, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());

    // Open the gate: callbacks in sequence order, then the listener, then committed_seq().
    committer_.complete(batch, [&] {
      if (events_listener_ && !committed_events.empty()) {
        events_listener_(last_event_seq_.load(), committed_events);
      }
    });
  }
}

}  // namespace doppel::storage
