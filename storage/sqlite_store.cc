#include "storage/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "storage/detail/as_of.h"
#include "storage/detail/query_sql.h"
#include "storage/detail/sqlite.h"
#include "twins/log.h"
#include "twins/record.h"

namespace doppel::storage {
namespace {

using detail::Database;
using detail::SqliteError;
using detail::Statement;
using detail::Transaction;

// Schema migrations, applied in order; PRAGMA user_version records how many ran. Never edit a
// shipped step: add a new one.
const char* const kMigrations[] = {
    // 1: twins and their command outboxes.
    R"sql(
CREATE TABLE twins (
  id            TEXT PRIMARY KEY,
  version       INTEGER NOT NULL,
  desired       TEXT NOT NULL,      -- JSON
  reported      TEXT NOT NULL,      -- JSON
  desired_meta  BLOB NOT NULL,      -- MessagePack: per-leaf {ts, version}
  reported_meta BLOB NOT NULL,      -- MessagePack: per-leaf ts or [ts, device_ts]
  body          BLOB NOT NULL,      -- MessagePack: versions, connection, liveness, reconcile, ...
  next_deadline INTEGER,            -- earliest alarm (Unix ms), NULL when none
  updated_at    INTEGER NOT NULL
);
CREATE INDEX twins_by_deadline ON twins(next_deadline, id) WHERE next_deadline IS NOT NULL;
CREATE TABLE commands (
  twin_id TEXT NOT NULL,
  seq     INTEGER NOT NULL,
  id      TEXT NOT NULL,
  status  TEXT NOT NULL,
  body    BLOB NOT NULL,            -- MessagePack
  PRIMARY KEY (twin_id, seq)
) WITHOUT ROWID;
)sql",
    // 2: per-device broker credentials (hashes in Mosquitto's password-file format).
    R"sql(
CREATE TABLE credentials (
  id   TEXT PRIMARY KEY,
  hash TEXT NOT NULL
) WITHOUT ROWID;
)sql",
    // 3: the change feed. Every event is written in the transaction of the change it describes;
    // AUTOINCREMENT: a seq is never reused, not after a crash and not after pruning emptied the
    // table. event_stats counts what the pruner needs without scanning.
    R"sql(
CREATE TABLE events (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  ts      INTEGER NOT NULL,   -- Unix ms, the shard's clock when it made the change
  twin    TEXT NOT NULL,
  kind    TEXT NOT NULL,
  version INTEGER NOT NULL,   -- the twin's content version after the change
  body    TEXT NOT NULL       -- JSON: cause and the kind's fields
);
CREATE INDEX events_by_twin ON events(twin, seq);
CREATE TABLE event_stats (
  name  TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO event_stats VALUES ('reported_events', 0);
)sql",
    // 4: as-of reads. Snapshots of each twin's history state (twins/as_of.h), taken with its
    // creation, every few dozen events and where the pruner cuts; deleted with the twin. An
    // event's step_seq is the seq of the first event of its write (NULL: it is that event), so
    // that a read can stop right after the write that made a version.
    R"sql(
ALTER TABLE events ADD COLUMN step_seq INTEGER;
CREATE TABLE snapshots (
  twin     TEXT NOT NULL,
  seq      INTEGER NOT NULL,  -- the state right after this event (the last of its write)
  step_seq INTEGER NOT NULL,  -- the first event of that write
  ts       INTEGER NOT NULL,
  version  INTEGER NOT NULL,
  state    TEXT NOT NULL,     -- JSON, twins::snapshot_text
  PRIMARY KEY (twin, seq)
) WITHOUT ROWID;
)sql",
    // 5: fleet queries. What the body holds, also as columns that SQL can filter, sort and count
    // on (filled for existing rows by backfill_query_columns), and the indexes on the states
    // operators ask for most.
    R"sql(
ALTER TABLE twins ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE twins ADD COLUMN desired_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN reported_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN liveness TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE twins ADD COLUMN last_seen INTEGER;
ALTER TABLE twins ADD COLUMN connection TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE twins ADD COLUMN reconcile TEXT NOT NULL DEFAULT 'converged';
ALTER TABLE twins ADD COLUMN reconcile_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN commands_queued INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN commands_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE twins ADD COLUMN encoding TEXT NOT NULL DEFAULT 'json';
CREATE INDEX twins_by_liveness ON twins(liveness, id);
CREATE INDEX twins_by_connection ON twins(connection, id);
CREATE INDEX twins_by_reconcile ON twins(reconcile, id);
)sql",
    // 6: jobs (twins/jobs.h). A job's specification is JSON; its executions are rows per twin,
    // written in the same transaction as the twin change each records; their counts per status
    // are kept beside them in that transaction, so reading them costs nothing.
    R"sql(
CREATE TABLE jobs (
  id         TEXT PRIMARY KEY,
  status     TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  spec       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX jobs_by_status ON jobs(status, id);
CREATE TABLE job_executions (
  job        TEXT NOT NULL,
  twin       TEXT NOT NULL,
  status     TEXT NOT NULL,
  attempts   INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  detail     TEXT NOT NULL,
  PRIMARY KEY (job, twin)
) WITHOUT ROWID;
CREATE INDEX job_executions_by_status ON job_executions(job, status, twin);
CREATE TABLE job_counts (  -- executions per job and status, kept by the writer
  job    TEXT NOT NULL,
  status TEXT NOT NULL,
  n      INTEGER NOT NULL,
  PRIMARY KEY (job, status)
) WITHOUT ROWID;
)sql",
    // 7: where the cap on reported events removed events from inside the retained range (one row
    // per pruning chunk: some events of `kind` with from_seq <= seq <= to_seq are gone), so a
    // feed reader resuming before them learns of it (twins::EventGap).
    R"sql(
CREATE TABLE event_gaps (
  from_seq INTEGER NOT NULL,
  to_seq   INTEGER NOT NULL,
  n        INTEGER NOT NULL,
  kind     TEXT NOT NULL
);
CREATE INDEX event_gaps_by_end ON event_gaps(to_seq);
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

const char* const kUpsertTwin = R"sql(
  INSERT INTO twins (id, version, desired, reported, desired_meta, reported_meta, body,
                     next_deadline, updated_at, tags, desired_version, reported_version,
                     created_at, liveness, last_seen, connection, reconcile, reconcile_attempts,
                     commands_queued, commands_sent, encoding)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
          ?20, ?21)
  ON CONFLICT (id) DO UPDATE SET version = excluded.version, desired = excluded.desired,
    reported = excluded.reported, desired_meta = excluded.desired_meta,
    reported_meta = excluded.reported_meta, body = excluded.body,
    next_deadline = excluded.next_deadline, updated_at = excluded.updated_at,
    tags = excluded.tags, desired_version = excluded.desired_version,
    reported_version = excluded.reported_version, created_at = excluded.created_at,
    liveness = excluded.liveness, last_seen = excluded.last_seen,
    connection = excluded.connection, reconcile = excluded.reconcile,
    reconcile_attempts = excluded.reconcile_attempts, commands_queued = excluded.commands_queued,
    commands_sent = excluded.commands_sent, encoding = excluded.encoding)sql";
// The same, leaving the indexed state columns as they are (TwinRecord::states_changed false).
const char* const kUpsertTwinSameStates = R"sql(
  INSERT INTO twins (id, version, desired, reported, desired_meta, reported_meta, body,
                     next_deadline, updated_at, tags, desired_version, reported_version,
                     created_at, liveness, last_seen, connection, reconcile, reconcile_attempts,
                     commands_queued, commands_sent, encoding)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
          ?20, ?21)
  ON CONFLICT (id) DO UPDATE SET version = excluded.version, desired = excluded.desired,
    reported = excluded.reported, desired_meta = excluded.desired_meta,
    reported_meta = excluded.reported_meta, body = excluded.body,
    next_deadline = excluded.next_deadline, updated_at = excluded.updated_at,
    tags = excluded.tags, desired_version = excluded.desired_version,
    reported_version = excluded.reported_version, created_at = excluded.created_at,
    last_seen = excluded.last_seen, reconcile_attempts = excluded.reconcile_attempts,
    commands_queued = excluded.commands_queued, commands_sent = excluded.commands_sent,
    encoding = excluded.encoding)sql";

void bind_record(Statement& st, const twins::TwinRecord& r) {
  st.bind(1, r.id)
      .bind(2, static_cast<int64_t>(r.version))
      .bind(3, std::string_view(r.desired))
      .bind(4, std::string_view(r.reported))
      .bind_blob(5, r.desired_meta)
      .bind_blob(6, r.reported_meta)
      .bind_blob(7, r.body)
      .bind(8, r.next_deadline)
      .bind(9, r.updated_at)
      .bind(10, std::string_view(r.tags))
      .bind(11, static_cast<int64_t>(r.desired_version))
      .bind(12, static_cast<int64_t>(r.reported_version))
      .bind(13, r.created_at)
      .bind(14, std::string_view(r.liveness))
      .bind(15, r.last_seen)
      .bind(16, std::string_view(r.connection))
      .bind(17, std::string_view(r.reconcile))
      .bind(18, static_cast<int64_t>(r.reconcile_attempts))
      .bind(19, static_cast<int64_t>(r.commands_queued))
      .bind(20, static_cast<int64_t>(r.commands_sent))
      .bind(21, std::string_view(r.encoding));
}

// One stored twin, read with `load_twin` (its columns as Reader's statement selects them) and
// `load_commands`.
std::optional<twins::StoredTwin> load_stored(Statement& load_twin, Statement& load_commands,
                                             const std::string& id) {
  load_twin.bind(1, id);
  if (!load_twin.step()) {
    load_twin.reset();
    return std::nullopt;
  }
  twins::StoredTwin st;
  st.twin.id = id;
  st.twin.version = static_cast<uint64_t>(load_twin.column_int(0));
  st.twin.desired = load_twin.column_text(1);
  st.twin.reported = load_twin.column_text(2);
  st.twin.desired_meta = load_twin.column_text(3);
  st.twin.reported_meta = load_twin.column_text(4);
  st.twin.body = load_twin.column_text(5);
  if (!load_twin.column_null(6)) st.twin.next_deadline = load_twin.column_int(6);
  st.twin.updated_at = load_twin.column_int(7);
  load_twin.reset();
  load_commands.bind(1, id);
  while (load_commands.step()) {
    st.commands.push_back({static_cast<uint64_t>(load_commands.column_int(0)),
                           load_commands.column_text(1), load_commands.column_text(2),
                           load_commands.column_text(3)});
  }
  load_commands.reset();
  return st;
}

constexpr const char* kLoadTwinSql =
    "SELECT version, desired, reported, desired_meta, reported_meta, body, next_deadline, "
    "updated_at FROM twins WHERE id = ?1";
constexpr const char* kLoadCommandsSql =
    "SELECT seq, id, status, body FROM commands WHERE twin_id = ?1 ORDER BY seq";

// Migration 5 added the query columns empty: fill them from each twin's body.
void backfill_query_columns(Database& db) {
  std::vector<std::string> ids;
  {
    Statement all(db, "SELECT id FROM twins");
    while (all.step()) ids.push_back(all.column_text(0));
  }
  Statement load_twin(db, kLoadTwinSql);
  Statement load_commands(db, kLoadCommandsSql);
  Statement upsert(db, kUpsertTwin);
  for (const auto& id : ids) {
    auto stored = load_stored(load_twin, load_commands, id);
    if (!stored) continue;
    auto twin = twins::from_record(*stored);
    if (!twin) {
      log_error("store: " + twin.status().to_string() + "; its query columns stay empty");
      continue;
    }
    twins::TwinRecord r = twins::to_record(*twin, stored->twin.next_deadline);
    bind_record(upsert, r);
    upsert.run();
  }
  if (!ids.empty()) {
    log_info("store: filled the query columns of " + std::to_string(ids.size()) + " twins");
  }
}

// A failure as a Status. SQLite's own words (which carry the statement's SQL) go to the log; the
// Status, which an API answer may show, says what failed and SQLite's error class. A read stopped
// at its deadline (SQLITE_INTERRUPT from ReadDeadline) is kTimeout.
Status to_status(const std::exception& e, std::string_view what) {
  if (const auto* sqlite = dynamic_cast<const detail::SqliteError*>(&e)) {
    if (sqlite->code() == SQLITE_INTERRUPT) {
      return Status(StatusCode::kTimeout, std::string(what) + ": stopped at its deadline");
    }
    log_warn("store: " + std::string(what) + ": " + e.what());
    return Status(StatusCode::kUnavailable,
                  std::string(what) + " failed: " + sqlite3_errstr(sqlite->code() & 0xff) +
                      " (the details are in doppeld's log)");
  }
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + e.what());
}

void configure(Database& db, Durability durability) {
  db.exec("PRAGMA busy_timeout = 10000");
  db.exec(durability == Durability::kFull ? "PRAGMA synchronous = FULL"
                                          : "PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA temp_store = MEMORY");
}

}  // namespace

struct SqliteTwinStore::Writer {
  Writer(const std::string& path, Durability durability)
      : db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
    db.exec("PRAGMA journal_mode = WAL");
    configure(db, durability);
    db.exec("PRAGMA cache_size = -8000");  // 8 MB; the OS page cache holds the rest
    // Checkpoints run on their own thread (checkpoint_loop), not inside the writer's commits,
    // where they added milliseconds to the output gate.
    db.exec("PRAGMA wal_autocheckpoint = 0");
  }
  void prepare() {
    upsert_twin = std::make_unique<Statement>(db, kUpsertTwin);
    upsert_twin_same_states = std::make_unique<Statement>(db, kUpsertTwinSameStates);
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
        load_twin(db, kLoadTwinSql),
        load_commands(db, kLoadCommandsSql),
        list_twins(db, "SELECT id FROM twins WHERE id > ?1 ORDER BY id LIMIT ?2"),
        due_twins(db,
                  "SELECT id, next_deadline FROM twins WHERE next_deadline IS NOT NULL AND "
                  "(next_deadline > ?1 OR (next_deadline = ?1 AND id > ?2)) AND "
                  "next_deadline <= ?3 ORDER BY next_deadline, id LIMIT ?4"),
        count_twins(db, "SELECT count(*) FROM twins"),
        count_commands(db, "SELECT status, count(*) FROM commands GROUP BY status") {
    configure(db, durability);
    db.exec("PRAGMA query_only = ON");  // reads only: whatever SQL a query builds cannot write
  }

  std::optional<twins::StoredTwin> load(const std::string& id) {
    return load_stored(load_twin, load_commands, id);
  }

  Database db;
  Statement load_twin, load_commands, list_twins, due_twins, count_twins, count_commands;
};

SqliteTwinStore::SqliteTwinStore(StoreOptions options, Metrics& metrics)
    : options_(std::move(options)),
      committer_(options_.max_queued),
      batch_size_(&metrics.histogram("doppel_store_commit_batch_size",
                                     "Twin writes per group commit",
                                     {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096})),
      commit_seconds_(
          &metrics.histogram("doppel_store_commit_seconds", "Time to write and commit one batch",
                             {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1})),
      writes_(&metrics.counter("doppel_store_writes_total", "Twin writes committed")),
      commits_(&metrics.counter("doppel_store_commits_total", "Group commits")),
      failures_(&metrics.counter("doppel_store_commit_failures_total", "Failed group commits")),
      events_(&metrics.counter("doppel_history_events_total",
                               "Change events committed (the change feed)")) {
  metrics.gauge_fn("doppel_store_sqlite_memory_bytes",
                   "Heap memory SQLite holds (page caches of all connections)",
                   [] { return static_cast<double>(sqlite3_memory_used()); });
  metrics.gauge_fn("doppel_store_queue_depth", "Writes waiting for the next group commit",
                   [this] { return static_cast<double>(committer_.queued()); });
}

Result<std::unique_ptr<SqliteTwinStore>> SqliteTwinStore::open(StoreOptions options,
                                                               Metrics& metrics) {
  std::unique_ptr<SqliteTwinStore> store(new SqliteTwinStore(std::move(options), metrics));
  try {
    const auto parent = std::filesystem::path(store->options_.path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    // Owner-only (it holds device credential hashes); SQLite gives its -wal and -shm files the
    // database file's permissions.
    const int fd = ::open(store->options_.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      (void)::fchmod(fd, 0600);
      ::close(fd);
    }
    store->writer_ = std::make_unique<Writer>(store->options_.path, store->options_.durability);
    Database& db = store->writer_->db;
    const int have = static_cast<int>(db.query_int("PRAGMA user_version"));
    if (have > kSchemaVersion) {
      return Status(StatusCode::kUnavailable,
                    store->options_.path + " has schema version " + std::to_string(have) +
                        ", newer than this doppeld understands (" + std::to_string(kSchemaVersion) +
                        "); upgrade doppeld");
    }
    for (int v = have; v < kSchemaVersion; ++v) {
      Transaction tx(db, true);
      db.exec(kMigrations[v]);
      if (v + 1 == 5) backfill_query_columns(db);
      db.exec(("PRAGMA user_version = " + std::to_string(v + 1)).c_str());
      tx.commit();
      log_info("store: migrated " + store->options_.path + " to schema version " +
               std::to_string(v + 1));
    }
    // Expression indexes asked for (--index): created once, then kept (also when no longer
    // asked for: dropping one is an operator's decision).
    for (const auto& name : store->options_.indexes) {
      auto field = twins::parse_query_field(name);
      if (!field)
        return Status(StatusCode::kInvalidArgument, "--index: " + field.status().message());
      const auto started = std::chrono::steady_clock::now();
      db.exec(detail::index_sql(*field).c_str());
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
              .count();
      log_info("store: index on " + name + " ready (" + std::to_string(static_cast<int64_t>(ms)) +
               " ms)");
    }
    store->schema_version_ = kSchemaVersion;
    store->writer_->prepare();
    store->last_event_seq_.store(static_cast<uint64_t>(db.query_int(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)")));
  } catch (const std::exception& e) {
    return to_status(e, "opening the store");
  }
  store->thread_ = std::thread([s = store.get()] { s->writer_loop(); });
  store->checkpointer_ = std::thread([s = store.get()] { s->checkpoint_loop(); });
  return store;
}

SqliteTwinStore::~SqliteTwinStore() { close(); }

void SqliteTwinStore::close() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  committer_.close();  // the writer commits what is queued, then stops
  if (thread_.joinable()) thread_.join();
  checkpoint_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  closed_.store(true);
  std::lock_guard lock(readers_mu_);
  readers_.clear();
}

uint64_t SqliteTwinStore::write(twins::TwinWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

uint64_t SqliteTwinStore::write(twins::JobWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

void SqliteTwinStore::discard(const std::string& id) { committer_.discard(id); }

void SqliteTwinStore::when_committed(uint64_t seq, twins::CommitCallback callback) {
  committer_.when_committed(seq, std::move(callback));
}

void SqliteTwinStore::flush() { committer_.flush(); }

void SqliteTwinStore::writer_loop() {
  GroupCommitter::Batch batch;
  std::unordered_map<std::string_view, size_t> last_row;
  std::unordered_set<std::string_view> states_changed;
  std::vector<twins::EventRecord> committed_events;  // of the current batch, with their seqs
  std::vector<std::string> counted_jobs;  // jobs whose execution counts the batch changed
  Writer& w = *writer_;
  while (true) {
    if (!committer_.take(batch, options_.max_batch, /*wait=*/true)) break;
    std::vector<Status>& statuses = batch.statuses;
    const size_t n = batch.ops.size();

    const auto started = std::chrono::steady_clock::now();
    try {
      // Only the last row written for a twin in this batch needs to reach the table.
      // Its indexed state columns are rewritten when any write of the batch changed them.
      last_row.clear();
      states_changed.clear();
      for (size_t i = 0; i < n; ++i) {
        const twins::TwinWrite* tw = batch.ops[i].twin();
        if (tw == nullptr || !statuses[i]) continue;
        if (tw->twin || tw->delete_twin) last_row[tw->id] = i;
        if (tw->twin && tw->twin->states_changed) states_changed.insert(tw->id);
      }
      Transaction tx(w.db, true);
      struct EventTally {
        int64_t reported = 0;  // reported.updated events written
        uint64_t last = 0;     // the newest seq written
        size_t count = 0;
      } tally;
      committed_events.clear();
      // Every event, in order: group commit coalesces a twin's rows, never its events. Returns
      // the first one's seq (0: none).
      auto insert_events = [&](const std::vector<twins::EventRecord>& events) {
        uint64_t step_first = 0;
        for (const twins::EventRecord& e : events) {
          w.insert_event->bind(1, e.ts)
              .bind(2, std::string_view(e.twin))
              .bind(3, std::string_view(e.kind))
              .bind(4, static_cast<int64_t>(e.version))
              .bind(5, std::string_view(e.body))
              .bind(6, step_first == 0 ? std::nullopt
                                       : std::optional<int64_t>(static_cast<int64_t>(step_first)))
              .run();
          tally.reported += e.kind == "reported.updated" ? 1 : 0;
          tally.last = static_cast<uint64_t>(sqlite3_last_insert_rowid(w.db.get()));
          ++tally.count;
          committed_events.push_back(e);
          committed_events.back().seq = tally.last;
          if (step_first == 0) step_first = tally.last;
        }
        return step_first;
      };
      for (size_t i = 0; i < n; ++i) {
        if (!statuses[i]) continue;
        if (const auto* job = std::get_if<twins::JobWrite>(&batch.ops[i].write)) {
          // In a savepoint with its events, so that it fails alone, events and all.
          const EventTally before = tally;
          const size_t events_before = committed_events.size();
          Status s =
              w.apply_alone(*job, fail_next_job_writes_, [&] { insert_events(job->events); });
          if (!s) {
            tally = before;
            committed_events.resize(events_before);
            statuses[i] = s;
            log_warn("store: " + s.to_string() + " (the rest of the batch commits)");
          }
          continue;
        }
        const twins::TwinWrite& tw = std::get<twins::TwinWrite>(batch.ops[i].write);
        const uint64_t step_first = insert_events(tw.events);
        if (!tw.snapshot.empty() && !tw.events.empty()) {
          w.insert_snapshot->bind(1, tw.id)
              .bind(2, static_cast<int64_t>(tally.last))
              .bind(3, static_cast<int64_t>(step_first))
              .bind(4, tw.events.back().ts)
              .bind(5, static_cast<int64_t>(tw.events.back().version))
              .bind(6, std::string_view(tw.snapshot))
              .run();
        }
        w.apply_executions(tw.executions);
        if (tw.delete_twin) {
          w.delete_twin->bind(1, tw.id).run();
          w.delete_commands->bind(1, tw.id).run();
          w.delete_snapshots->bind(1, tw.id).run();
          continue;
        }
        if (tw.twin && last_row[tw.id] == i) {
          Statement& upsert =
              states_changed.count(tw.id) != 0 ? *w.upsert_twin : *w.upsert_twin_same_states;
          bind_record(upsert, *tw.twin);
          upsert.run();
        }
        for (const auto& c : tw.upsert_commands) {
          w.upsert_command->bind(1, tw.id)
              .bind(2, static_cast<int64_t>(c.seq))
              .bind(3, std::string_view(c.id))
              .bind(4, std::string_view(c.status))
              .bind_blob(5, c.body)
              .run();
        }
        for (uint64_t seq : tw.delete_commands) {
          w.delete_command->bind(1, tw.id).bind(2, static_cast<int64_t>(seq)).run();
        }
      }
      if (tally.reported > 0) w.count_reported->bind(1, tally.reported).run();
      counted_jobs.clear();
      w.flush_counts(counted_jobs);
      if (fail_next_commits_.load() > 0) {
        fail_next_commits_.fetch_sub(1);
        throw std::runtime_error("injected commit failure (test hook)");
      }
      tx.commit();
      if (!committed_events.empty()) {
        // The newest seq first: a reader that has seen an event in the tail may resume after
        // it at once, and the feed refuses positions past last_event_seq().
        last_event_seq_.store(tally.last);
        {
          std::lock_guard tail_lock(tail_mu_);
          for (const auto& e : committed_events) tail_.push_back(e);
          while (tail_.size() > kTail) tail_.pop_front();
        }
        events_->inc(static_cast<uint64_t>(tally.count));
      }
      commits_->inc();
      writes_->inc(n);
    } catch (const std::exception& e) {
      committed_events.clear();  // rolled back: nobody hears of them
      counted_jobs.clear();
      w.count_changes.clear();
      const Status failed = to_status(e, "group commit of " + std::to_string(n) + " writes");
      failures_->inc();
      log_error("store: " + failed.to_string() +
                "; the twins it carried reload their committed state");
      committer_.fail(batch, failed);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    batch_size_->observe(static_cast<double>(n));
    commit_seconds_->observe(seconds);

    // Open the gate: callbacks in sequence order, then the listeners, then committed_seq().
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

void SqliteTwinStore::checkpoint_loop() {
  // A PASSIVE checkpoint copies what it can from the WAL into the database without blocking
  // the writer or readers; the writer restarts the WAL from the top once it is all copied.
  std::unique_ptr<Database> db;
  while (true) {
    {
      std::unique_lock lock(stop_mu_);
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
      if (stopping_) break;
    }
    try {
      if (!db) {
        db = std::make_unique<Database>(options_.path, SQLITE_OPEN_READWRITE);
        configure(*db, options_.durability);
      }
      int wal_frames = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                               &wal_frames, &copied);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) db->fail(rc, "checkpoint");
    } catch (const std::exception& e) {
      log_warn(std::string("store: checkpoint failed, retrying: ") + e.what());
      db.reset();
    }
  }
}

std::unique_ptr<SqliteTwinStore::Reader> SqliteTwinStore::acquire_reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!readers_.empty()) {
      auto r = std::move(readers_.back());
      readers_.pop_back();
      return r;
    }
  }
  return std::make_unique<Reader>(options_.path, options_.durability);
}

void SqliteTwinStore::release_reader(std::unique_ptr<Reader> reader) {
  std::lock_guard lock(readers_mu_);
  if (!closed_.load()) readers_.push_back(std::move(reader));
}

Result<std::optional<twins::StoredTwin>> SqliteTwinStore::load(const std::string& id) {
  try {
    auto reader = acquire_reader();
    std::optional<twins::StoredTwin> st;
    {
      Transaction tx(reader->db, false);  // one snapshot for the row and its commands
      st = reader->load(id);
      tx.commit();
    }
    release_reader(std::move(reader));
    return st;
  } catch (const std::exception& e) {
    return to_status(e, "loading twin '" + id + "'");
  }
}

Result<std::vector<twins::StoredTwin>> SqliteTwinStore::list(const std::string& after_id,
                                                             size_t limit) {
  try {
    auto reader = acquire_reader();
    std::vector<twins::StoredTwin> out;
    {
      Transaction tx(reader->db, false);
      std::vector<std::string> ids;
      reader->list_twins.bind(1, after_id).bind(2, static_cast<int64_t>(limit));
      while (reader->list_twins.step()) ids.push_back(reader->list_twins.column_text(0));
      reader->list_twins.reset();
      for (const auto& id : ids) {
        if (auto st = reader->load(id)) out.push_back(std::move(*st));
      }
      tx.commit();
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "listing twins");
  }
}

Result<std::vector<twins::DueTwin>> SqliteTwinStore::due(twins::Millis after_due,
                                                         const std::string& after_id,
                                                         twins::Millis up_to, size_t limit) {
  try {
    auto reader = acquire_reader();
    std::vector<twins::DueTwin> out;
    auto& q = reader->due_twins;
    q.bind(1, after_due).bind(2, after_id).bind(3, up_to).bind(4, static_cast<int64_t>(limit));
    while (q.step()) out.push_back({q.column_text(0), q.column_int(1)});
    q.reset();
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "scanning deadlines");
  }
}

Result<uint64_t> SqliteTwinStore::count() {
  try {
    auto reader = acquire_reader();
    auto& q = reader->count_twins;
    const uint64_t n = q.step() ? static_cast<uint64_t>(q.column_int(0)) : 0;
    q.reset();
    release_reader(std::move(reader));
    return n;
  } catch (const std::exception& e) {
    return to_status(e, "counting twins");
  }
}

}  // namespace doppel::storage

namespace doppel::storage {

Result<std::vector<std::pair<std::string, uint64_t>>> SqliteTwinStore::command_counts() {
  try {
    auto reader = acquire_reader();
    std::vector<std::pair<std::string, uint64_t>> out;
    auto& q = reader->count_commands;
    while (q.step()) out.emplace_back(q.column_text(0), static_cast<uint64_t>(q.column_int(1)));
    q.reset();
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "counting commands");
  }
}

Result<twins::EventPage> SqliteTwinStore::events(const twins::EventQuery& q) {
  {
    // Recent positions come from memory.
    std::lock_guard lock(tail_mu_);
    if (!tail_.empty() && q.after_seq + 1 >= tail_.front().seq) {
      twins::EventPage page;
      page.from_tail = true;
      page.scanned_to = std::max(q.after_seq, tail_.back().seq);
      auto it =
          std::upper_bound(tail_.begin(), tail_.end(), q.after_seq,
                           [](uint64_t seq, const twins::EventRecord& e) { return seq < e.seq; });
      for (; it != tail_.end(); ++it) {
        if (page.events.size() == q.limit) {
          page.scanned_to = page.events.back().seq;
          break;
        }
        if (q.filter.matches(*it)) page.events.push_back(*it);
      }
      return page;
    }
  }
  try {
    auto reader = acquire_reader();
    twins::EventPage page;
    page.scanned_to = q.after_seq;
    {
      Transaction tx(reader->db, false);
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
      Statement st(reader->db, sql.c_str());
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
            page.scanned_to, static_cast<uint64_t>(
                                 reader->db.query_int("SELECT coalesce(max(seq), 0) FROM events")));
      }
      // What the cap removed from inside what this page covers. (The recent tail never holds a
      // gap: it is emptied when events are pruned and refills after the newest seq then.)
      if (page.scanned_to > q.after_seq) {
        Statement gaps(reader->db,
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
    release_reader(std::move(reader));
    return page;
  } catch (const std::exception& e) {
    return to_status(e, "reading events");
  }
}

Result<twins::EventBounds> SqliteTwinStore::event_bounds() {
  try {
    auto reader = acquire_reader();
    twins::EventBounds b;
    {
      Transaction tx(reader->db, false);
      b.oldest =
          static_cast<uint64_t>(reader->db.query_int("SELECT coalesce(min(seq), 0) FROM events"));
      b.newest =
          static_cast<uint64_t>(reader->db.query_int("SELECT coalesce(max(seq), 0) FROM events"));
      b.last_assigned = static_cast<uint64_t>(reader->db.query_int(
          "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"));
      tx.commit();
    }
    release_reader(std::move(reader));
    return b;
  } catch (const std::exception& e) {
    return to_status(e, "reading the event bounds");
  }
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
      std::vector<detail::Cut> cuts;
      for (const auto& [twin, seq] : last) {
        if (auto cut = detail::make_cut(db, twin, seq)) cuts.push_back(std::move(*cut));
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
      std::lock_guard tail_lock(tail_mu_);
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
  try {
    auto reader = acquire_reader();
    twins::HistorySlice slice;
    {
      Transaction tx(reader->db, false);
      slice = detail::read_history_slice(reader->db, id, at);
      tx.commit();
    }
    release_reader(std::move(reader));
    return slice;
  } catch (const std::exception& e) {
    return to_status(e, "reading the history of twin '" + id + "'");
  }
}

namespace {

// The SELECT of a page of `q`: ids and sort keys, one row more than the page (is there more?).
detail::SqlStatement page_sql(const twins::TwinQuery& q) {
  static const twins::QueryExpr kEverything;
  detail::SqlFilter f = detail::query_filter(q.where != nullptr ? *q.where : kEverything);
  const std::string key = detail::field_value_sql(q.order.field);
  std::string sql = "SELECT id, " + key + " FROM twins WHERE " + f.where;
  if (q.after) {
    // Keyset: after (key, id) in the page's order, as a row-value range that the index on
    // (key, id) serves. SQLite orders NULL first, then numbers, then text, and compares across
    // those types the same way.
    const int k = static_cast<int>(f.params.size()) + 1;
    const std::string pk = "?" + std::to_string(k);
    const std::string pi = "?" + std::to_string(k + 1);
    const bool null_key = q.after->key.is_null();
    if (key == "id") {
      sql += q.order.descending ? " AND id < " + pi : " AND id > " + pi;
    } else if (!q.order.descending) {
      sql +=
          null_key
              ? " AND ((" + key + " IS NULL AND id > " + pi + ") OR " + key + " IS NOT NULL)"
              // The first term lets SQLite start inside an expression index.
              : " AND " + key + " >= " + pk + " AND (" + key + ", id) > (" + pk + ", " + pi + ")";
    } else {
      sql += null_key
                 ? " AND " + key + " IS NULL AND id < " + pi
                 : " AND ((" + key + ", id) < (" + pk + ", " + pi + ") OR " + key + " IS NULL)";
    }
    f.params.push_back(detail::sql_value_of(q.after->key));
    f.params.push_back(q.after->id);
  }
  const char* dir = q.order.descending ? " DESC" : "";
  sql += " ORDER BY " + key + dir;
  if (key != "id") sql += std::string(", id") + dir;
  sql += " LIMIT " + std::to_string(q.limit + 1);

  return detail::SqlStatement{std::move(sql), std::move(f.params)};
}

}  // namespace

Result<std::string> SqliteTwinStore::query_plan(const twins::TwinQuery& q) {
  try {
    const detail::SqlStatement f = page_sql(q);
    auto reader = acquire_reader();
    std::string plan;
    {
      Statement st(reader->db, ("EXPLAIN QUERY PLAN " + f.sql).c_str());
      for (size_t i = 0; i < f.params.size(); ++i) {
        detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
      }
      while (st.step()) plan += st.column_text(3) + "\n";
    }
    release_reader(std::move(reader));
    return plan;
  } catch (const std::exception& e) {
    return to_status(e, "explaining a query");
  }
}

Result<std::pair<std::vector<twins::StoredTwin>, std::optional<twins::QueryCursor>>>
SqliteTwinStore::query(const twins::TwinQuery& q) {
  try {
    const detail::SqlStatement f = page_sql(q);
    const std::string& sql = f.sql;
    auto reader = acquire_reader();
    std::vector<twins::StoredTwin> out;
    std::optional<twins::QueryCursor> next;
    {
      const detail::ReadDeadline budget(reader->db, q.budget.deadline);
      Transaction tx(reader->db, false);
      std::vector<std::pair<std::string, detail::SqlValue>> rows;
      {
        Statement st(reader->db, sql.c_str());
        for (size_t i = 0; i < f.params.size(); ++i) {
          detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
        }
        while (st.step()) rows.emplace_back(st.column_text(0), detail::column_value(st, 1));
      }
      for (size_t i = 0; i < rows.size() && i < q.limit; ++i) {
        if (auto stored = reader->load(rows[i].first)) out.push_back(std::move(*stored));
      }
      if (rows.size() > q.limit) {
        const auto& [id, v] = rows[q.limit - 1];
        next = twins::QueryCursor{detail::json_of(v), id};
      }
      tx.commit();
    }
    release_reader(std::move(reader));
    return std::make_pair(std::move(out), std::move(next));
  } catch (const std::exception& e) {
    return to_status(e, "querying twins");
  }
}

Result<twins::FleetCount> SqliteTwinStore::count_where(
    const twins::QueryExpr& where, const std::optional<twins::QueryField>& group_by,
    const twins::ReadBudget& budget) {
  try {
    const detail::SqlFilter f = detail::query_filter(where);
    std::string sql;
    if (group_by) {
      // A fixed field's groups stream from its index (when it has one); a JSON field's need its
      // type too, to tell 1 from true.
      const std::string value = detail::field_value_sql(*group_by);
      const bool json_field = group_by->doc != twins::QueryField::Doc::kNone;
      sql = json_field ? "SELECT " + value + ", " + detail::field_type_sql(*group_by) +
                             ", count(*) FROM twins WHERE " + f.where + " GROUP BY 1, 2"
                       : "SELECT " + value + ", NULL, count(*) FROM twins WHERE " + f.where +
                             " GROUP BY 1";
    } else {
      sql = "SELECT count(*) FROM twins WHERE " + f.where;
    }
    auto reader = acquire_reader();
    twins::FleetCount out;
    {
      const detail::ReadDeadline deadline(reader->db, budget.deadline);
      Transaction tx(reader->db, false);
      Statement st(reader->db, sql.c_str());
      // Largest groups first, ties in the store's value order (the order rows arrive in); at
      // most budget.max_groups of them are kept, so memory stays bounded by the budget, not by
      // how many values the field has.
      std::vector<uint64_t> arrival;
      auto larger = [&](size_t a, size_t b) {
        return out.groups[a].count != out.groups[b].count
                   ? out.groups[a].count > out.groups[b].count
                   : arrival[a] < arrival[b];
      };
      auto keep_largest = [&](size_t n) {
        std::vector<size_t> order(out.groups.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), larger);
        if (order.size() > n) {
          order.resize(n);
          out.truncated = true;
        }
        std::vector<twins::CountGroup> groups;
        std::vector<uint64_t> arrived;
        for (size_t i : order) {
          groups.push_back(std::move(out.groups[i]));
          arrived.push_back(arrival[i]);
        }
        out.groups = std::move(groups);
        arrival = std::move(arrived);
      };
      uint64_t rows = 0;
      for (size_t i = 0; i < f.params.size(); ++i) {
        detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
      }
      while (st.step()) {
        if (!group_by) {
          out.count = static_cast<uint64_t>(st.column_int(0));
          break;
        }
        twins::CountGroup g;
        const std::string type = st.column_null(1) ? "" : st.column_text(1);
        if (type == "true" || type == "false") {
          g.value = type == "true";
        } else if (type == "object" || type == "array") {
          g.value = twins::json::parse(st.column_text(0), nullptr, false);
        } else {
          g.value = detail::json_of(detail::column_value(st, 0));
        }
        g.count = static_cast<uint64_t>(st.column_int(2));
        out.count += g.count;
        out.groups.push_back(std::move(g));
        arrival.push_back(rows++);
        if (out.groups.size() >= 2 * std::min<size_t>(budget.max_groups, SIZE_MAX / 2) + 1024) {
          keep_largest(budget.max_groups);
        }
      }
      st.reset();
      tx.commit();
      keep_largest(budget.max_groups);
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "counting twins");
  }
}

Result<std::vector<std::string>> SqliteTwinStore::matching_ids(const twins::QueryExpr& where,
                                                               const std::string& not_in_job,
                                                               const std::string& after_id,
                                                               size_t limit) {
  try {
    const detail::SqlFilter f = detail::query_filter(where, 4);
    const std::string sql =
        "SELECT id FROM twins WHERE id > ?1 AND (?2 = '' OR NOT EXISTS (SELECT 1 FROM "
        "job_executions WHERE job = ?2 AND twin = twins.id)) AND " +
        f.where + " ORDER BY id LIMIT ?3";
    auto reader = acquire_reader();
    std::vector<std::string> out;
    {
      Statement st(reader->db, sql.c_str());
      st.bind(1, std::string_view(after_id))
          .bind(2, std::string_view(not_in_job))
          .bind(3, static_cast<int64_t>(limit));
      for (size_t i = 0; i < f.params.size(); ++i) {
        detail::bind_value(st, static_cast<int>(i + 4), f.params[i]);
      }
      while (st.step()) out.push_back(st.column_text(0));
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "finding the twins a job targets");
  }
}

namespace {

twins::JobRecord job_row(const Statement& st) {
  twins::JobRecord j;
  j.id = st.column_text(0);
  j.status = twins::parse_job_status(st.column_text(1)).value_or(twins::JobStatus::kRunning);
  j.created_at = st.column_int(2);
  j.updated_at = st.column_int(3);
  j.spec = st.column_text(4);
  return j;
}

}  // namespace

Result<std::optional<twins::JobRecord>> SqliteTwinStore::job(const std::string& id) {
  try {
    auto reader = acquire_reader();
    std::optional<twins::JobRecord> out;
    {
      Statement st(reader->db,
                   "SELECT id, status, created_at, updated_at, spec FROM jobs "
                   "WHERE id = ?1");
      st.bind(1, std::string_view(id));
      if (st.step()) out = job_row(st);
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "reading job '" + id + "'");
  }
}

Result<std::vector<twins::JobRecord>> SqliteTwinStore::jobs(std::optional<twins::JobStatus> status,
                                                            const std::string& after_id,
                                                            size_t limit) {
  try {
    auto reader = acquire_reader();
    std::vector<twins::JobRecord> out;
    {
      Statement st(reader->db,
                   "SELECT id, status, created_at, updated_at, spec FROM jobs WHERE id > ?1 AND "
                   "(?2 IS NULL OR status = ?2) ORDER BY id LIMIT ?3");
      st.bind(1, std::string_view(after_id));
      if (status) {
        st.bind(2, twins::to_string(*status));
      } else {
        st.bind_null(2);
      }
      st.bind(3, static_cast<int64_t>(limit));
      while (st.step()) out.push_back(job_row(st));
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "listing jobs");
  }
}

Result<twins::JobCounts> SqliteTwinStore::job_counts(const std::string& id) {
  try {
    auto reader = acquire_reader();
    twins::JobCounts out;
    {
      Statement st(reader->db, "SELECT status, n FROM job_counts WHERE job = ?1");
      st.bind(1, std::string_view(id));
      while (st.step()) {
        if (auto s = twins::parse_exec_status(st.column_text(0))) {
          out.of(*s) = static_cast<uint64_t>(std::max<int64_t>(0, st.column_int(1)));
        }
      }
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "counting the executions of job '" + id + "'");
  }
}

Result<std::vector<twins::ExecutionRecord>> SqliteTwinStore::executions(
    const std::string& id, std::optional<twins::ExecStatus> status, const std::string& after_twin,
    size_t limit) {
  try {
    auto reader = acquire_reader();
    std::vector<twins::ExecutionRecord> out;
    {
      Statement st(reader->db, status ? "SELECT twin, status, attempts, updated_at, detail FROM "
                                        "job_executions WHERE job = ?1 AND status = ?2 AND "
                                        "twin > ?3 ORDER BY twin LIMIT ?4"
                                      : "SELECT twin, status, attempts, updated_at, detail FROM "
                                        "job_executions WHERE job = ?1 AND ?2 IS NULL AND "
                                        "twin > ?3 ORDER BY twin LIMIT ?4");
      st.bind(1, std::string_view(id));
      if (status) {
        st.bind(2, twins::to_string(*status));
      } else {
        st.bind_null(2);
      }
      st.bind(3, std::string_view(after_twin)).bind(4, static_cast<int64_t>(limit));
      while (st.step()) {
        twins::ExecutionRecord e;
        e.job = id;
        e.twin = st.column_text(0);
        e.status =
            twins::parse_exec_status(st.column_text(1)).value_or(twins::ExecStatus::kPending);
        e.attempts = static_cast<uint32_t>(st.column_int(2));
        e.updated_at = st.column_int(3);
        e.detail = st.column_text(4);
        out.push_back(std::move(e));
      }
    }
    release_reader(std::move(reader));
    return out;
  } catch (const std::exception& e) {
    return to_status(e, "listing the executions of job '" + id + "'");
  }
}

}  // namespace doppel::storage
