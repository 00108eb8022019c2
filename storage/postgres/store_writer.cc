// PostgresTwinStore's writer thread: a group commit as one transaction of multi-row statements,
// pipelined (postgres_store.h).
#include <array>
#include <atomic>
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

const char* const kInsertEvents =
    "INSERT INTO events (seq, ts, twin, kind, version, body, step_seq) SELECT * FROM "
    "unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], "
    "$7::bigint[])";

// The changes a transaction makes to executions counts per job and status, written with it.
class JobCountChanges {
 public:
  void add(const std::string& job, std::string_view status, int64_t n) {
    if (n != 0) changes_[{job, std::string(status)}] += n;
  }
  // A job's executions and counts were reset: what this transaction counted for it is gone too.
  void forget(const std::string& job) {
    for (auto it = changes_.lower_bound({job, ""}); it != changes_.end() && it->first.first == job;)
      it = changes_.erase(it);
  }
  // Writes them; `jobs` gets the ids of the jobs whose counts changed.
  void flush(pg::Connection& db, std::vector<std::string>& jobs) {
    Columns<3> c;
    for (const auto& [key, n] : changes_) {
      if (n == 0) continue;
      if (jobs.empty() || jobs.back() != key.first) jobs.push_back(key.first);
      c.columns[0].text(key.first);
      c.columns[1].text(key.second);
      c.columns[2].integer(n);
    }
    changes_.clear();
    if (c.empty()) return;
    db.must(
        "INSERT INTO job_counts (job, status, n) SELECT * FROM unnest($1::text[], $2::text[], "
        "$3::bigint[]) ON CONFLICT (job, status) DO UPDATE SET n = job_counts.n + excluded.n",
        c.params());
  }

 private:
  std::map<std::pair<std::string, std::string>, int64_t> changes_;
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

// Executions to upsert (the last per job and twin wins), and the change each makes to its job's
// counts per status, which the statement tells (the status before, the status after).
struct Executions {
  std::map<std::pair<std::string_view, std::string_view>, const twins::ExecutionRecord*> rows;
  void add(const std::vector<twins::ExecutionRecord>& records) {
    for (const auto& e : records) rows[{e.job, e.twin}] = &e;
  }
  void flush(pg::Connection& db, JobCountChanges& counts) {
    if (rows.empty()) return;
    Columns<6> c;
    for (const auto& [key, e] : rows) {
      c.columns[0].text(e->job);
      c.columns[1].text(e->twin);
      c.columns[2].text(twins::to_string(e->status));
      c.columns[3].integer(static_cast<int64_t>(e->attempts));
      c.columns[4].integer(e->updated_at);
      c.columns[5].text(e->detail);
    }
    rows.clear();
    pg::Rows changed = db.must(
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], "
        "$5::bigint[], $6::text[]) AS i(job, twin, status, attempts, updated_at, detail)), "
        "old AS (SELECT e.job, e.twin, e.status FROM job_executions e "
        "JOIN input i ON e.job = i.job AND e.twin = i.twin), "
        "up AS (INSERT INTO job_executions (job, twin, status, attempts, updated_at, detail) "
        "SELECT * FROM input ON CONFLICT (job, twin) DO UPDATE SET status = excluded.status, "
        "attempts = excluded.attempts, updated_at = excluded.updated_at, "
        "detail = excluded.detail RETURNING job, twin, status) "
        "SELECT up.job, old.status, up.status FROM up "
        "LEFT JOIN old ON old.job = up.job AND old.twin = up.twin",
        c.params());
    for (size_t r = 0; r < changed.size(); ++r) {
      const std::string job = changed.text(r, 0);
      const std::string after = changed.text(r, 2);
      if (changed.is_null(r, 1)) {
        counts.add(job, after, 1);
      } else if (const std::string before = changed.text(r, 1); before != after) {
        counts.add(job, before, -1);
        counts.add(job, after, 1);
      }
    }
  }
};

// A job-level write in a savepoint of its own, with its events (`events`, numbered already): on
// failure it is undone alone, its count changes too, and the rest of the transaction goes on.
Status apply_job_write(pg::Connection& db, const twins::JobWrite& jw, const Columns<7>& events,
                       JobCountChanges& counts, std::atomic<int>& fail_next) {
  const JobCountChanges before = counts;
  db.must("SAVEPOINT job_write");
  try {
    if (!events.empty()) db.must(kInsertEvents, events.params());
    Executions executions;
    executions.add(jw.executions);
    executions.flush(db, counts);
    for (const auto& j : jw.jobs) {
      db.must(
          "INSERT INTO jobs (id, status, created_at, updated_at, spec) VALUES ($1, $2, $3, $4, "
          "$5) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
          "updated_at = excluded.updated_at",
          pg::Params()
              .text(j.id)
              .text(twins::to_string(j.status))
              .integer(j.created_at)
              .integer(j.updated_at)
              .text(j.spec));
    }
    if (!jw.targets_job.empty()) {
      const pg::Params job = pg::Params().text(jw.targets_job);
      if (jw.reset_targets) {
        db.must("DELETE FROM job_executions WHERE job = $1", job);
        db.must("DELETE FROM job_counts WHERE job = $1", job);
        counts.forget(jw.targets_job);
      }
      if (!jw.targets_twins.empty()) {
        pg::ArrayLiteral twins;
        for (const auto& t : jw.targets_twins) twins.text(t);
        const uint64_t added =
            db.must(
                  "INSERT INTO job_executions (job, twin, status, attempts, updated_at, detail) "
                  "SELECT $1, t, 'pending', 0, $3, '' FROM unnest($2::text[]) AS t "
                  "ON CONFLICT (job, twin) DO NOTHING",
                  pg::Params().text(jw.targets_job).array(twins).integer(jw.targets_at))
                .affected();
        counts.add(jw.targets_job, "pending", static_cast<int64_t>(added));
      }
    }
    if (!jw.cancel_pending_job.empty()) {
      const auto n = static_cast<int64_t>(
          db.must("UPDATE job_executions SET status = 'cancelled', detail = $2, updated_at = $3 "
                  "WHERE job = $1 AND status = 'pending'",
                  pg::Params()
                      .text(jw.cancel_pending_job)
                      .text(jw.cancel_detail)
                      .integer(jw.targets_at))
              .affected());
      counts.add(jw.cancel_pending_job, "pending", -n);
      counts.add(jw.cancel_pending_job, "cancelled", n);
    }
    if (fail_next.load() > 0) {
      fail_next.fetch_sub(1);
      throw pg::Failure(Status(StatusCode::kUnavailable, "injected job write failure (test hook)"));
    }
    db.must("RELEASE SAVEPOINT job_write");
    return Status::ok();
  } catch (const pg::Failure& f) {
    counts = before;
    // Should undoing fail, the transaction itself is broken: that throws, and the whole batch
    // fails as any failed commit does.
    db.must("ROLLBACK TO SAVEPOINT job_write");
    db.must("RELEASE SAVEPOINT job_write");
    const std::string job = !jw.targets_job.empty()          ? jw.targets_job
                            : !jw.jobs.empty()               ? jw.jobs.front().id
                            : !jw.cancel_pending_job.empty() ? jw.cancel_pending_job
                            : !jw.executions.empty()         ? jw.executions.front().job
                                                             : std::string();
    return Status(f.status().code(), "job write of '" + job + "': " + f.status().message());
  }
}

// BEGIN, the write lock, (in a cluster) the newest event seq, and the current epochs of the
// batch's partitions (read after the lock: a claim that committed before it is seen), in one
// round trip; the seq is the third result and the epochs' rows the last. A cluster node reads the
// seq rather than remembering it: the writers of other nodes number events too, one after the
// other under the lock, so the feed's seq stays gap-free and in commit order across nodes. (A
// node on its own is the only writer, and reading it cost PostgreSQL's latency p99 measurably.)
std::vector<pg::Connection::Statement> begin_statements(const GroupCommitter::Batch& batch,
                                                        bool cluster) {
  std::vector<pg::Connection::Statement> out;
  out.push_back({"BEGIN", {}});
  out.push_back({"SELECT pg_advisory_xact_lock($1)", pg::Params().integer(postgres::kWriteLock)});
  if (cluster) out.push_back({"SELECT value FROM event_stats WHERE name = 'last_seq'", {}});
  std::array<bool, twins::kPartitions> asked{};
  pg::ArrayLiteral partitions;
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    const std::optional<uint32_t> p = batch.ops[i].fenced_partition();
    if (!p || !batch.statuses[i] || *p >= asked.size()) continue;
    if (!asked[*p]) partitions.integer(*p);
    asked[*p] = true;
  }
  out.push_back(
      // FOR SHARE: a cluster node that takes one of these partitions (an UPDATE of its row)
      // waits for this transaction, or this one sees its new epoch: never both. In partition
      // order, as the lease table locks them, so the two never deadlock.
      {"SELECT partition_id, epoch, owner FROM doppel_partitions "
       "WHERE partition_id = ANY($1::bigint[]) ORDER BY partition_id FOR SHARE",
       pg::Params().array(partitions)});
  return out;
}

}  // namespace

void PostgresTwinStore::fence(const pg::Rows& rows, GroupCommitter::Batch& batch) {
  std::array<uint64_t, twins::kPartitions> current{};  // 0: no such partition, fenced
  std::string owner;
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto p = static_cast<size_t>(rows.integer(r, 0));
    if (p >= current.size()) continue;
    current[p] = static_cast<uint64_t>(rows.integer(r, 1));
    if (current[p] != epochs_[p]) owner = rows.text(r, 2);
  }
  const size_t fenced = committer_.fence(
      batch, [&](uint32_t p) { return p < current.size() ? current[p] : uint64_t{0}; });
  fenced_writes_->inc(fenced);
  // A cluster node loses partitions in the normal course (another node took them over): only
  // those writes fail. A node on its own has been replaced by another doppeld.
  if (fenced > 0 && !options_.cluster && !fenced_.exchange(true)) {
    log_error("store: another doppeld (" + owner +
              ") claimed this PostgreSQL database's partitions after this one did; this one's "
              "writes are refused from now on (503 fenced) and /readyz says so. Stop one of "
              "the two: a database serves one doppeld");
  }
}

void PostgresTwinStore::writer_loop() {
  GroupCommitter::Batch batch;
  BatchPlan plan;
  Writer::TwinColumns all_states, same_states;
  std::vector<twins::EventRecord> committed_events;  // of the current batch, with their seqs
  std::vector<std::string> counted_jobs;  // jobs whose execution counts the batch changed
  Writer& w = *writer_;
  while (committer_.take(batch, options_.max_batch, /*wait=*/true)) {
    std::vector<Status>& statuses = batch.statuses;
    const size_t n = batch.ops.size();
    const auto started = std::chrono::steady_clock::now();
    committed_events.clear();
    counted_jobs.clear();
    uint64_t seq = last_event_seq_.load();
    try {
      connect_writer();
      pg::Connection& db = *w.db;
      const std::vector<pg::Rows> begun = db.pipeline(begin_statements(batch, options_.cluster));
      if (options_.cluster) seq = static_cast<uint64_t>(begun[2].integer(0, 0));
      const uint64_t first_seq = seq;
      fence(begun.back(), batch);
      plan.make(batch);
      BatchRows rows;
      all_states.clear();
      same_states.clear();
      int64_t reported = 0;
      // A job-level write's events, numbered in order with the rest and written in its savepoint;
      // the range of committed_events they take.
      struct JobEvents {
        Columns<7> rows;
        size_t from = 0, to = 0;
      };
      std::map<size_t, JobEvents> job_events;  // by op
      // Every event, in order: group commit coalesces a twin's rows, never its events.
      auto number = [&](const std::vector<twins::EventRecord>& events, Columns<7>& into) {
        uint64_t step_first = 0;
        for (const twins::EventRecord& e : events) {
          ++seq;
          auto& c = into.columns;
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
      };
      for (size_t i = 0; i < n; ++i) {
        if (!statuses[i]) continue;
        const twins::TwinWrite* tw = batch.ops[i].twin();
        if (tw == nullptr) {
          JobEvents& je = job_events[i];
          je.from = committed_events.size();
          number(std::get<twins::JobWrite>(batch.ops[i].write).events, je.rows);
          je.to = committed_events.size();
          continue;
        }
        number(tw->events, rows.events);
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

      // The batch's statements, sent together (pg.h, pipeline): one round trip, COMMIT included
      // when no execution or job-level write needs an answer in between.
      std::vector<pg::Connection::Statement> sts;
      if (!rows.deleted.empty()) {
        pg::ArrayLiteral ids;
        for (auto id : rows.deleted) ids.text(id);
        const pg::Params p = pg::Params().array(ids);
        sts.push_back({"DELETE FROM twins WHERE id = ANY($1::text[])", p});
        sts.push_back({"DELETE FROM commands WHERE twin_id = ANY($1::text[])", p});
        sts.push_back({"DELETE FROM snapshots WHERE twin = ANY($1::text[])", p});
      }
      if (!rows.events.empty()) sts.push_back({kInsertEvents, rows.events.params()});
      if (!rows.snapshots.empty()) {
        sts.push_back(
            {"INSERT INTO snapshots (twin, seq, step_seq, ts, version, state) SELECT * FROM "
             "unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], "
             "$6::text[]) ON CONFLICT (twin, seq) DO UPDATE SET step_seq = excluded.step_seq, "
             "ts = excluded.ts, version = excluded.version, state = excluded.state",
             rows.snapshots.params()});
      }
      if (all_states.rows > 0) {
        sts.push_back({postgres::upsert_twins_sql(true), all_states.params()});
      }
      if (same_states.rows > 0) {
        sts.push_back({postgres::upsert_twins_sql(false), same_states.params()});
      }
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
          sts.push_back(
              {"DELETE FROM commands WHERE (twin_id, seq) IN (SELECT * FROM unnest($1::text[], "
               "$2::bigint[]))",
               gone.params()});
        }
        if (!put.empty()) {
          sts.push_back(
              {"INSERT INTO commands (twin_id, seq, id, status, body) SELECT * FROM "
               "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[]) "
               "ON CONFLICT (twin_id, seq) DO UPDATE SET id = excluded.id, "
               "status = excluded.status, body = excluded.body",
               put.params()});
        }
      }
      // Executions and job-level writes need answers (count changes, savepoints): the statements
      // so far go first, then those in batch order (a job write may reset or cancel what
      // executions before it wrote); a job write that fails drops its own events only.
      bool jobs_part = false;
      for (size_t i = 0; i < n && !jobs_part; ++i) {
        const twins::TwinWrite* tw = batch.ops[i].twin();
        jobs_part = statuses[i] && (tw == nullptr || !tw->executions.empty());
      }
      std::vector<bool> dropped(committed_events.size(), false);
      if (jobs_part) {
        if (!sts.empty()) db.pipeline(sts);
        sts.clear();
        JobCountChanges counts;
        Executions executions;
        for (size_t i = 0; i < n; ++i) {
          if (!statuses[i]) continue;
          if (const twins::TwinWrite* tw = batch.ops[i].twin()) {
            executions.add(tw->executions);
            continue;
          }
          executions.flush(db, counts);
          const JobEvents& je = job_events[i];
          Status s = apply_job_write(db, std::get<twins::JobWrite>(batch.ops[i].write), je.rows,
                                     counts, fail_next_job_writes_);
          if (!s) {
            for (size_t e = je.from; e < je.to; ++e) dropped[e] = true;
            statuses[i] = s;
            log_warn("store: " + s.to_string() + " (the rest of the batch commits)");
          }
        }
        executions.flush(db, counts);
        counts.flush(db, counted_jobs);
      }
      if (seq > first_seq) {
        // The highest seq assigned (one a failed job write took is never used again).
        sts.push_back(
            {"UPDATE event_stats SET value = CASE name WHEN 'last_seq' THEN $1 "
             "ELSE value + $2 END WHERE name IN ('last_seq', 'reported_events')",
             pg::Params().integer(static_cast<int64_t>(seq)).integer(reported)});
      }
      if (fail_next_commits_.load() > 0) {
        fail_next_commits_.fetch_sub(1);
        if (!sts.empty()) db.pipeline(sts);
        throw pg::Failure(Status(StatusCode::kUnavailable, "injected commit failure (test hook)"));
      }
      if (options_.cluster && seq > first_seq) {
        // Wakes the other nodes' change feeds (delivered at COMMIT, not before).
        sts.push_back({"SELECT pg_notify('doppel_events', '')", {}});
      }
      sts.push_back({"COMMIT", {}});
      db.pipeline(sts);
      size_t kept = 0;
      for (size_t e = 0; e < committed_events.size(); ++e) {
        if (dropped[e]) continue;
        if (kept != e) committed_events[kept] = std::move(committed_events[e]);
        ++kept;
      }
      committed_events.resize(kept);
      if (seq > last_event_seq_.load()) {
        // The newest seq first: a reader that has seen an event in the tail may resume after
        // it at once, and the feed refuses positions past last_event_seq().
        last_event_seq_.store(seq);
        // A cluster node's own events have other nodes' between them: not a gap-free tail.
        if (!options_.cluster) tail_.append(committed_events);
      }
      commit_metrics_.committed(n, committed_events.size());
    } catch (const pg::Failure& f) {
      committed_events.clear();  // rolled back: nobody hears of them
      counted_jobs.clear();
      if (w.db && w.db->ok()) (void)w.db->exec("ROLLBACK");
      const Status failed(f.status().code(), "group commit of " + std::to_string(n) +
                                                 " writes: " + f.status().message());
      commit_metrics_.failed();
      if (!w.waiting) {
        log_error("store: " + failed.to_string() +
                  "; the twins it carried reload their committed state");
      }
      committer_.fail(batch, failed);
    }
    commit_metrics_.batch(
        n, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());

    // Open the gate: callbacks in sequence order, then the listener, then committed_seq().
    committer_.complete(batch, [&] {
      if (events_listener_ && !committed_events.empty()) {
        events_listener_(last_event_seq_.load(), committed_events);
      }
      if (!counted_jobs.empty()) {
        std::lock_guard listener_lock(listener_mu_);
        if (job_counts_listener_) job_counts_listener_(counted_jobs);
      }
    });
  }
}

}  // namespace doppel::storage
