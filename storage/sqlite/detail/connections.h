// The SQLite store's connections, for its implementation files only (sqlite_store.cc and the
// store_*.cc beside it): the writer's, with every statement a group commit runs, and a reader's.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "storage/sqlite/detail/sqlite.h"
#include "storage/sqlite/detail/twin_rows.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/record.h"

namespace doppel::storage {
namespace detail {

// Settings every connection of the store gets.
inline void configure(Database& db, Durability durability) {
  db.exec("PRAGMA busy_timeout = 10000");
  db.exec(durability == Durability::kFull ? "PRAGMA synchronous = FULL"
                                          : "PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA temp_store = MEMORY");
}

}  // namespace detail

// The SQLite wrappers, by their short names in the store's implementation files.
using detail::Database;
using detail::SqliteError;
using detail::Statement;
using detail::to_status;
using detail::Transaction;

struct SqliteTwinStore::Writer {
  Writer(const std::string& path, Durability durability)
      : db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
    db.exec("PRAGMA journal_mode = WAL");
    detail::configure(db, durability);
    db.exec("PRAGMA cache_size = -8000");  // 8 MB; the OS page cache holds the rest
    // Checkpoints run on their own thread (checkpoint_loop), not inside the writer's commits,
    // where they added milliseconds to the output gate.
    db.exec("PRAGMA wal_autocheckpoint = 0");
  }
  void prepare() {
    upsert_twin = std::make_unique<Statement>(db, detail::upsert_twin_sql().c_str());
    upsert_twin_same_states =
        std::make_unique<Statement>(db, detail::upsert_twin_same_states_sql().c_str());
    delete_twin = std::make_unique<Statement>(db, "DELETE FROM twins WHERE id = ?1");
    delete_commands = std::make_unique<Statement>(db, "DELETE FROM commands WHERE twin_id = ?1");
    upsert_command = std::make_unique<Statement>(db, R"sql(
      INSERT INTO commands (twin_id, seq, id, status, body) VALUES (?1, ?2, ?3, ?4, ?5)
      ON CONFLICT (twin_id, seq) DO UPDATE SET id = excluded.id, status = excluded.status,
        body = excluded.body)sql");
    delete_command =
        std::make_unique<Statement>(db, "DELETE FROM commands WHERE twin_id = ?1 AND seq = ?2");
    insert_event = std::make_unique<Statement>(
        db,
        "INSERT INTO events (ts, twin, kind, version, body, step_seq) VALUES (?1, ?2, ?3, ?4, ?5, "
        "?6)");
    insert_snapshot = std::make_unique<Statement>(
        db,
        "INSERT OR REPLACE INTO snapshots (twin, seq, step_seq, ts, version, state) VALUES (?1, "
        "?2, ?3, ?4, ?5, ?6)");
    delete_snapshots = std::make_unique<Statement>(db, "DELETE FROM snapshots WHERE twin = ?1");
    count_reported = std::make_unique<Statement>(
        db, "UPDATE event_stats SET value = value + ?1 WHERE name = 'reported_events'");
    upsert_execution = std::make_unique<Statement>(db, R"sql(
      INSERT INTO job_executions (job, twin, status, attempts, updated_at, detail)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6)
      ON CONFLICT (job, twin) DO UPDATE SET status = excluded.status,
        attempts = excluded.attempts, updated_at = excluded.updated_at,
        detail = excluded.detail)sql");
    upsert_job = std::make_unique<Statement>(db, R"sql(
      INSERT INTO jobs (id, status, created_at, updated_at, spec) VALUES (?1, ?2, ?3, ?4, ?5)
      ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at)sql");
    reset_executions = std::make_unique<Statement>(db, "DELETE FROM job_executions WHERE job = ?1");
    reset_counts = std::make_unique<Statement>(db, "DELETE FROM job_counts WHERE job = ?1");
    add_target = std::make_unique<Statement>(
        db,
        "INSERT OR IGNORE INTO job_executions (job, twin, status, attempts, updated_at, detail) "
        "VALUES (?1, ?2, 'pending', 0, ?3, '')");
    cancel_pending = std::make_unique<Statement>(
        db,
        "UPDATE job_executions SET status = 'cancelled', detail = ?2, updated_at = ?3 "
        "WHERE job = ?1 AND status = 'pending'");
    execution_status = std::make_unique<Statement>(
        db, "SELECT status FROM job_executions WHERE job = ?1 AND twin = ?2");
    savepoint = std::make_unique<Statement>(db, "SAVEPOINT job_write");
    release = std::make_unique<Statement>(db, "RELEASE job_write");
    rollback_to = std::make_unique<Statement>(db, "ROLLBACK TO job_write");
    add_count = std::make_unique<Statement>(db, R"sql(
      INSERT INTO job_counts (job, status, n) VALUES (?1, ?2, ?3)
      ON CONFLICT (job, status) DO UPDATE SET n = n + excluded.n)sql");
  }
  // Execution counts this transaction changes: (job, status) -> change. Applied by
  // flush_counts() before the commit.
  std::map<std::pair<std::string, std::string>, int64_t> count_changes;
  void count(const std::string& job, std::string_view status, int64_t n) {
    if (n != 0) count_changes[{job, std::string(status)}] += n;
  }
  // Writes the count changes; `jobs` gets the ids of the jobs whose counts changed.
  void flush_counts(std::vector<std::string>& jobs) {
    for (const auto& [key, n] : count_changes) {
      if (n == 0) continue;
      if (jobs.empty() || jobs.back() != key.first) jobs.push_back(key.first);
      add_count->bind(1, std::string_view(key.first))
          .bind(2, std::string_view(key.second))
          .bind(3, n)
          .run();
    }
    count_changes.clear();
  }
  int64_t changes() { return sqlite3_changes(db.get()); }
  // The job rows, targets and cancellation of a job-level write.
  void apply_jobs(const twins::JobWrite& tw) {
    for (const auto& j : tw.jobs) {
      upsert_job->bind(1, std::string_view(j.id))
          .bind(2, twins::to_string(j.status))
          .bind(3, j.created_at)
          .bind(4, j.updated_at)
          .bind(5, std::string_view(j.spec))
          .run();
    }
    if (!tw.targets_job.empty()) {
      if (tw.reset_targets) {
        reset_executions->bind(1, std::string_view(tw.targets_job)).run();
        reset_counts->bind(1, std::string_view(tw.targets_job)).run();
      }
      for (const auto& twin : tw.targets_twins) {
        add_target->bind(1, std::string_view(tw.targets_job))
            .bind(2, std::string_view(twin))
            .bind(3, tw.targets_at)
            .run();
        count(tw.targets_job, "pending", changes());
      }
    }
    if (!tw.cancel_pending_job.empty()) {
      cancel_pending->bind(1, std::string_view(tw.cancel_pending_job))
          .bind(2, std::string_view(tw.cancel_detail))
          .bind(3, tw.targets_at)
          .run();
      const int64_t n = changes();
      count(tw.cancel_pending_job, "pending", -n);
      count(tw.cancel_pending_job, "cancelled", n);
    }
  }
  // A job-level write in a savepoint of its own: on failure it is undone alone (its events and
  // count changes too) and the rest of the transaction goes on.
  // `with_it` runs first, inside the savepoint (the write's events).
  Status apply_alone(const twins::JobWrite& tw, std::atomic<int>& fail_next,
                     const std::function<void()>& with_it) {
    auto counts_before = count_changes;
    savepoint->run();
    try {
      with_it();
      apply_executions(tw.executions);
      apply_jobs(tw);
      if (fail_next.load() > 0) {
        fail_next.fetch_sub(1);
        throw std::runtime_error("injected job write failure (test hook)");
      }
      release->run();
      return Status::ok();
    } catch (const std::exception& e) {
      count_changes = std::move(counts_before);
      // Should undoing fail, the transaction itself is broken: that throws, and the whole batch
      // fails as any failed commit does.
      rollback_to->run();
      release->run();
      const std::string job = !tw.targets_job.empty()          ? tw.targets_job
                              : !tw.jobs.empty()               ? tw.jobs.front().id
                              : !tw.cancel_pending_job.empty() ? tw.cancel_pending_job
                              : !tw.executions.empty()         ? tw.executions.front().job
                                                               : std::string();
      return to_status(e, "job write of '" + job + "'");
    }
  }
  void apply_executions(const std::vector<twins::ExecutionRecord>& executions) {
    for (const auto& e : executions) {
      const std::string_view status = twins::to_string(e.status);
      execution_status->bind(1, std::string_view(e.job)).bind(2, std::string_view(e.twin));
      std::string before = execution_status->step() ? execution_status->column_text(0) : "";
      execution_status->reset();
      if (before != status) {
        if (!before.empty()) count(e.job, before, -1);
        count(e.job, status, 1);
      }
      upsert_execution->bind(1, std::string_view(e.job))
          .bind(2, std::string_view(e.twin))
          .bind(3, twins::to_string(e.status))
          .bind(4, static_cast<int64_t>(e.attempts))
          .bind(5, e.updated_at)
          .bind(6, std::string_view(e.detail))
          .run();
    }
  }
  Database db;
  std::unique_ptr<Statement> upsert_twin, upsert_twin_same_states, delete_twin, delete_commands,
      upsert_command, delete_command, insert_event, count_reported, insert_snapshot,
      delete_snapshots, upsert_execution, upsert_job, reset_executions, reset_counts, add_target,
      cancel_pending, execution_status, add_count, savepoint, release, rollback_to;
};

struct SqliteTwinStore::Reader {
  Reader(const std::string& path, Durability durability)
      : db(path, SQLITE_OPEN_READWRITE),
        load_twin(db, detail::kLoadTwinSql),
        load_commands(db, detail::kLoadCommandsSql),
        list_twins(db, "SELECT id FROM twins WHERE id > ?1 ORDER BY id LIMIT ?2"),
        due_twins(db,
                  "SELECT id, next_deadline FROM twins WHERE next_deadline IS NOT NULL AND "
                  "(next_deadline > ?1 OR (next_deadline = ?1 AND id > ?2)) AND "
                  "next_deadline <= ?3 AND "
                  "(?5 IS NULL OR partition_id IN (SELECT value FROM json_each(?5))) "
                  "ORDER BY next_deadline, id LIMIT ?4"),
        count_twins(db, "SELECT count(*) FROM twins"),
        count_commands(db, "SELECT status, count(*) FROM commands GROUP BY status") {
    detail::configure(db, durability);
    db.exec("PRAGMA query_only = ON");  // reads only: whatever SQL a query builds cannot write
  }

  std::optional<twins::StoredTwin> load(const std::string& id) {
    return detail::load_stored(load_twin, load_commands, id);
  }

  Database db;
  Statement load_twin, load_commands, list_twins, due_twins, count_twins, count_commands;
};

template <typename What, typename Read>
auto SqliteTwinStore::with_reader(const What& what, Read&& read)
    -> decltype(read(std::declval<Reader&>())) {
  try {
    auto reader = acquire_reader();
    auto out = read(*reader);
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    if constexpr (std::is_invocable_v<const What&>) {
      return to_status(e, what());
    } else {
      return to_status(e, what);
    }
  }
}

}  // namespace doppel::storage
