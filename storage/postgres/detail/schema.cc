#include "storage/postgres/detail/schema.h"

#include <string>

#include "storage/twin_row.h"
#include "twins/log.h"
#include "twins/partition.h"

namespace doppel::storage::postgres {
namespace {

// Text compares bytewise everywhere ("C"), as in SQLite: ids page and sort the same on both.
constexpr const char* kText = "text COLLATE \"C\"";

// The twins table as its first schema step made it: the first `columns` of the one list of its
// columns (storage/twin_row.h); later steps add the rest.
std::string twins_table(size_t columns) {
  std::string sql = "CREATE TABLE twins (\n";
  for (size_t i = 0; i < columns; ++i) {
    const RowColumn& c = twin_row_columns()[i];
    sql += std::string("  ") + c.name + " " +
           (c.type == RowColumn::Type::kText    ? kText
            : c.type == RowColumn::Type::kBytes ? "bytea"
                                                : "bigint") +
           (c.nullable ? "" : " NOT NULL") +
           (std::string_view(c.name) == "id" ? " PRIMARY KEY" : "") + ",\n";
  }
  sql.resize(sql.size() - 2);
  return sql + "\n);\n";
}

// Migrations, applied in order; doppel_schema_migrations records which ran. Never edit a shipped
// step: add a new one.
std::string migration(int v) {
  switch (v) {
    case 1:  // twins, their command outboxes, the change feed, snapshots and retention's gaps
      return twins_table(21) + R"sql(
CREATE INDEX twins_by_deadline ON twins (next_deadline, id) WHERE next_deadline IS NOT NULL;
CREATE INDEX twins_by_liveness ON twins (liveness, id);
CREATE INDEX twins_by_connection ON twins (connection, id);
CREATE INDEX twins_by_reconcile ON twins (reconcile, id);
CREATE TABLE commands (
  twin_id text COLLATE "C" NOT NULL,
  seq     bigint NOT NULL,
  id      text NOT NULL,
  status  text NOT NULL,
  body    bytea NOT NULL,
  PRIMARY KEY (twin_id, seq)
);
-- The change feed: every event is written in the transaction of the change it describes, its seq
-- assigned by the writer in commit order; event_stats keeps the highest seq ever assigned (so that
-- pruning never lets one be reused) and what the pruner counts.
CREATE TABLE events (
  seq      bigint PRIMARY KEY,
  ts       bigint NOT NULL,
  twin     text COLLATE "C" NOT NULL,
  kind     text NOT NULL,
  version  bigint NOT NULL,
  body     text NOT NULL,
  step_seq bigint
);
CREATE INDEX events_by_twin ON events (twin, seq);
CREATE TABLE event_stats (
  name  text PRIMARY KEY,
  value bigint NOT NULL
);
INSERT INTO event_stats VALUES ('reported_events', 0), ('last_seq', 0);
CREATE TABLE snapshots (
  twin     text COLLATE "C" NOT NULL,
  seq      bigint NOT NULL,
  step_seq bigint NOT NULL,
  ts       bigint NOT NULL,
  version  bigint NOT NULL,
  state    text NOT NULL,
  PRIMARY KEY (twin, seq)
);
CREATE TABLE event_gaps (
  from_seq bigint NOT NULL,
  to_seq   bigint NOT NULL,
  n        bigint NOT NULL,
  kind     text NOT NULL
);
CREATE INDEX event_gaps_by_end ON event_gaps (to_seq);
)sql";
    case 2:  // fleet queries: a document as jsonb (NUL, which jsonb cannot hold, as U+FFFD), and
             // the sort key of a value — missing, then numbers and booleans, then the rest
      return R"sql(
CREATE FUNCTION doppel_doc(t text) RETURNS jsonb LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT replace(t, '\u0000', '\ufffd')::jsonb $$;
CREATE FUNCTION doppel_number(j jsonb) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'number' THEN j::numeric END $$;
CREATE FUNCTION doppel_rank(j jsonb) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT CASE jsonb_typeof(j) WHEN 'number' THEN 1 WHEN 'boolean' THEN 1
                    WHEN 'string' THEN 2 WHEN 'object' THEN 2 WHEN 'array' THEN 2 ELSE 0 END $$;
CREATE FUNCTION doppel_sort_number(j jsonb) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT CASE jsonb_typeof(j) WHEN 'number' THEN j::numeric
                    WHEN 'boolean' THEN CASE WHEN j = 'true'::jsonb THEN 1 ELSE 0 END
                    ELSE 0 END $$;
CREATE FUNCTION doppel_sort_text(j jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT CASE jsonb_typeof(j) WHEN 'string' THEN j #>> '{}' WHEN 'object' THEN j::text
                    WHEN 'array' THEN j::text ELSE '' END $$;
)sql";
    case 3:  // jobs (twins/jobs.h): their rows, executions per twin written with the twin change
             // each records, and their counts per status kept beside them by the writer
      return R"sql(
CREATE TABLE jobs (
  id         text COLLATE "C" PRIMARY KEY,
  status     text NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  spec       text NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE TABLE job_executions (
  job        text COLLATE "C" NOT NULL,
  twin       text COLLATE "C" NOT NULL,
  status     text NOT NULL,
  attempts   bigint NOT NULL,
  updated_at bigint NOT NULL,
  detail     text NOT NULL,
  PRIMARY KEY (job, twin)
);
CREATE INDEX job_executions_by_status ON job_executions (job, status, twin);
CREATE TABLE job_counts (
  job    text COLLATE "C" NOT NULL,
  status text NOT NULL,
  n      bigint NOT NULL,
  PRIMARY KEY (job, status)
);
)sql";
    case 4: {  // ownership (twins/partition.h): each twin's partition (set for existing rows by
               // backfill_partitions), and the epoch at which each partition is held and by whom
      std::string sql = R"sql(
ALTER TABLE twins ADD COLUMN partition_id bigint NOT NULL DEFAULT 0;
CREATE TABLE doppel_partitions (
  partition_id bigint PRIMARY KEY,
  epoch        bigint NOT NULL,
  owner        text NOT NULL,
  claimed_at   timestamptz
);
)sql";
      // (256 partitions as shipped; step 6 made them 1,024.)
      sql +=
          "INSERT INTO doppel_partitions SELECT p, 0, '', NULL FROM generate_series(0, 255) AS "
          "p;\n";
      return sql;
    }
    case 5:  // cluster leases (twins/leases.h): a partition's row is also its lease — when it
             // ends by the database's clock (NULL: a single node's claim, which carries no lease
             // and which a cluster node may take) — and the nodes alive, each until its
             // heartbeat's lease ends
      return R"sql(
ALTER TABLE doppel_partitions ADD COLUMN expires_at timestamptz;
CREATE TABLE doppel_nodes (
  node        text COLLATE "C" PRIMARY KEY,
  alive_until timestamptz NOT NULL
);
)sql";
    case 6:  // 1,024 partitions (the cluster's virtual shards): the new rows, and every twin's
             // partition recomputed (backfill_partitions)
      return "INSERT INTO doppel_partitions SELECT p, 0, '', NULL, NULL FROM "
             "generate_series(256, " +
             std::to_string(twins::kPartitions - 1) + ") AS p;\n";
    case 7:  // a cluster node's address (where the others forward its twins' requests), when it
             // started and when it last sent a heartbeat (GET /v1/cluster)
      return R"sql(
ALTER TABLE doppel_nodes ADD COLUMN advertise text NOT NULL DEFAULT '';
ALTER TABLE doppel_nodes ADD COLUMN started_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE doppel_nodes ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now();
)sql";
    case 8:  // the topic scheme each twin's device speaks (twins::Dialect), for queries
      return "ALTER TABLE twins ADD COLUMN dialect text COLLATE \"C\" NOT NULL DEFAULT 'doppel';\n";
    default:
      return {};
  }
}

constexpr int kSchemaVersion = 8;
constexpr int64_t kMigrateLock = 0x646f7070656d;  // "doppem"

// Steps 4 and 6 added partition_id as 0 and changed how many partitions there are: set each
// existing twin's (computed here: the hash is ours).
void backfill_partitions(pg::Connection& db) {
  pg::Rows ids = db.must("SELECT id FROM twins");
  pg::ArrayLiteral id_array, partitions;
  for (size_t r = 0; r < ids.size(); ++r) {
    const std::string id = ids.text(r, 0);
    id_array.text(id);
    partitions.integer(twins::partition_of(id));
  }
  if (ids.size() == 0) return;
  db.must(
      "UPDATE twins SET partition_id = u.p FROM unnest($1::text[], $2::bigint[]) AS u(id, p) "
      "WHERE twins.id = u.id",
      pg::Params().array(id_array).array(partitions));
}

}  // namespace

int schema_version() { return kSchemaVersion; }

Status migrate(pg::Connection& db) {
  try {
    // Nodes that start at once on a new database migrate one after the other: the advisory lock
    // comes before even the bookkeeping table is created (two concurrent CREATE TABLE IF NOT
    // EXISTS can both try to create it).
    db.must("BEGIN");
    db.must("SELECT pg_advisory_xact_lock($1)", pg::Params().integer(kMigrateLock));
    db.must(
        "CREATE TABLE IF NOT EXISTS doppel_schema_migrations (version integer PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now())");
    db.must("LOCK TABLE doppel_schema_migrations IN EXCLUSIVE MODE");
    const int have = static_cast<int>(
        db.must("SELECT coalesce(max(version), 0) FROM doppel_schema_migrations").integer(0, 0));
    if (have > kSchemaVersion) {
      db.must("ROLLBACK");
      return Status(StatusCode::kUnavailable,
                    "the PostgreSQL database has schema version " + std::to_string(have) +
                        ", newer than this doppeld understands (" + std::to_string(kSchemaVersion) +
                        "); upgrade doppeld");
    }
    for (int v = have + 1; v <= kSchemaVersion; ++v) {
      if (Status s = db.exec_script(migration(v)); !s) throw pg::Failure(s);
      db.must("INSERT INTO doppel_schema_migrations (version) VALUES ($1)",
              pg::Params().integer(v));
      log_info("store: migrated the PostgreSQL database to schema version " + std::to_string(v));
    }
    if (have < 6) backfill_partitions(db);
    db.must("COMMIT");
    return Status::ok();
  } catch (const pg::Failure& f) {
    (void)db.exec("ROLLBACK");
    return Status(f.status().code(), "migrating the PostgreSQL schema: " + f.status().message());
  }
}

}  // namespace doppel::storage::postgres
