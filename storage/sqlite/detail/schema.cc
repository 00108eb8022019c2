#include "storage/sqlite/detail/schema.h"

#include "storage/sqlite/detail/twin_rows.h"
#include "twins/log.h"
#include "twins/partition.h"
#include "twins/record.h"

namespace doppel::storage::detail {
namespace {

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
    // 8: ownership (twins/partition.h). Each twin's partition, so that a deadline scan can be
    // asked for some partitions (filled for existing rows by backfill_partitions). One file has
    // one owner, so there is no lease table: every partition is at twins::kFirstEpoch for good.
    R"sql(
ALTER TABLE twins ADD COLUMN partition_id INTEGER NOT NULL DEFAULT 0;
)sql",
    // 9: 1,024 partitions (the cluster's virtual shards, twins/partition.h): every twin's
    // partition recomputed by backfill_partitions; no table changes.
    R"sql(
-- partition_id = fnv1a32(id) % 1024 from here on
)sql",
    // 10: the topic scheme each twin's device speaks (twins::Dialect), for queries.
    R"sql(
ALTER TABLE twins ADD COLUMN dialect TEXT NOT NULL DEFAULT 'doppel';
)sql",
    // 11: device certificates (--device-auth x509): which serial the device CA issued to which
    // device, and when it was revoked (the CRL lists those).
    R"sql(
CREATE TABLE device_certificates (
  serial     TEXT PRIMARY KEY,
  device     TEXT NOT NULL,
  issued_at  INTEGER NOT NULL,
  revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX device_certificates_by_device ON device_certificates(device);
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

// Migration 5 added the query columns empty: fill them from each twin's body.
void backfill_query_columns(Database& db) {
  std::vector<std::string> ids;
  {
    Statement all(db, "SELECT id FROM twins");
    while (all.step()) ids.push_back(all.column_text(0));
  }
  Statement load_twin(db, kLoadTwinSql);
  Statement load_commands(db, kLoadCommandsSql);
  Statement upsert(db, upsert_twin_sql().c_str());
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

// Migration 8 added partition_id as 0 and 9 changed how many partitions there are: set each
// twin's.
void backfill_partitions(Database& db) {
  std::vector<std::string> ids;
  {
    Statement all(db, "SELECT id FROM twins");
    while (all.step()) ids.push_back(all.column_text(0));
  }
  Statement set(db, "UPDATE twins SET partition_id = ?2 WHERE id = ?1");
  for (const auto& id : ids) set.bind(1, id).bind(2, int64_t{twins::partition_of(id)}).run();
}

}  // namespace

int schema_version() { return kSchemaVersion; }

Status migrate(Database& db, const std::string& path) {
  const int have = static_cast<int>(db.query_int("PRAGMA user_version"));
  if (have > kSchemaVersion) {
    return Status(StatusCode::kUnavailable, path + " has schema version " + std::to_string(have) +
                                                ", newer than this doppeld understands (" +
                                                std::to_string(kSchemaVersion) +
                                                "); upgrade doppeld");
  }
  if (have == kSchemaVersion) return Status::ok();
  // Every step in one transaction, and the backfills after the last (they write whole rows in
  // today's layout): a crash leaves the file as it was.
  Transaction tx(db, true);
  for (int v = have; v < kSchemaVersion; ++v) db.exec(kMigrations[v]);
  if (have < 5) {
    backfill_query_columns(db);  // the whole row, partition_id included
  } else if (have < 9) {
    backfill_partitions(db);
  }
  db.exec(("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str());
  tx.commit();
  log_info("store: migrated " + path + " from schema version " + std::to_string(have) + " to " +
           std::to_string(kSchemaVersion));
  return Status::ok();
}

}  // namespace doppel::storage::detail
