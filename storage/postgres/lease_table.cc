#include "storage/postgres/lease_table.h"

#include "storage/postgres/detail/pg.h"
#include "storage/postgres/detail/schema.h"

namespace doppel::storage {
namespace {

// "now() + lease": a lease in milliseconds as an interval, by the server's clock.
constexpr const char* kUntil = "now() + $2::bigint * interval '1 millisecond'";

// Every statement that changes partitions' rows first locks them in ascending partition order,
// as the store's writer does with its FOR SHARE read: two transactions that lock rows in the same
// order never deadlock (an UPDATE's own scan order follows the table's physical order, which many
// updates shuffle). `locked(id)`: the rows named by the ids array, locked. ($3 holds the ids in
// acquire and renew, $2 in release.)
constexpr const char* kLockInOrder =
    "WITH locked AS (SELECT partition_id AS id FROM doppel_partitions WHERE partition_id = "
    "ANY($3::bigint[]) ORDER BY partition_id FOR UPDATE) ";
// Acquiring skips rows another transaction holds: a writer's group commit holds its partitions'
// rows FOR SHARE, and one of a node that froze mid-commit must not stall this node's round (which
// would then stop serving its own partitions); its partitions are taken in a later round, once
// its session's timeouts (shorter than the lease) have ended that transaction.
constexpr const char* kLockFreeInOrder =
    "WITH locked AS (SELECT partition_id AS id FROM doppel_partitions WHERE partition_id = "
    "ANY($3::bigint[]) ORDER BY partition_id FOR UPDATE SKIP LOCKED) ";
constexpr const char* kLockInOrderRelease =
    "WITH locked AS (SELECT partition_id AS id FROM doppel_partitions WHERE partition_id = "
    "ANY($2::bigint[]) ORDER BY partition_id FOR UPDATE) ";

std::string lease_sql(const std::string& sql) {
  std::string out = sql;
  for (size_t at = out.find("{until}"); at != std::string::npos; at = out.find("{until}")) {
    out.replace(at, 7, kUntil);
  }
  return out;
}

// The held shards as two parallel bigint arrays (ids, epochs), for unnest().
std::pair<pg::ArrayLiteral, pg::ArrayLiteral> held_arrays(
    const std::vector<twins::HeldShard>& held) {
  std::pair<pg::ArrayLiteral, pg::ArrayLiteral> out;
  for (const auto& [s, e] : held) {
    out.first.integer(s);
    out.second.integer(static_cast<int64_t>(e));
  }
  return out;
}

}  // namespace

PostgresLeaseTable::PostgresLeaseTable(std::string uri) : uri_(std::move(uri)) {}
PostgresLeaseTable::~PostgresLeaseTable() = default;

Result<std::unique_ptr<PostgresLeaseTable>> PostgresLeaseTable::open(const std::string& uri) {
  std::unique_ptr<PostgresLeaseTable> t(new PostgresLeaseTable(uri));
  std::lock_guard lock(t->mu_);
  if (Status s = t->connect(); !s) return s;
  if (Status s = postgres::migrate(*t->db_); !s) return s;
  return t;
}

Status PostgresLeaseTable::connect() {
  if (db_ && db_->ok()) return Status::ok();
  auto c = pg::Connection::open(uri_);
  if (!c) return c.status();
  db_ = std::make_unique<pg::Connection>(std::move(*c));
  // A lease round is a few short statements: nothing may hold a row lock near a lease's length.
  return db_->exec_script(
      "SET statement_timeout = 2000; SET idle_in_transaction_session_timeout = 2000");
}

Result<std::vector<std::string>> PostgresLeaseTable::heartbeat(const std::string& node,
                                                               twins::Millis lease) {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  // The statement's snapshot does not see its own upsert: the node is added by the UNION.
  auto rows = db_->exec(lease_sql("WITH up AS (INSERT INTO doppel_nodes (node, alive_until, "
                                  "advertise) VALUES ($1, {until}, $3) ON CONFLICT (node) DO "
                                  "UPDATE SET alive_until = EXCLUDED.alive_until, advertise = "
                                  "EXCLUDED.advertise, heartbeat_at = now() RETURNING node) "
                                  "SELECT node FROM doppel_nodes WHERE alive_until > now() "
                                  "UNION SELECT node FROM up ORDER BY 1"),
                        pg::Params().text(node).integer(lease).text(advertise_));
  if (!rows) return rows.status();
  std::vector<std::string> alive;
  for (size_t r = 0; r < rows->size(); ++r) alive.push_back(rows->text(r, 0));
  return alive;
}

Result<std::vector<twins::HeldShard>> PostgresLeaseTable::acquire(
    const std::string& node, const std::vector<uint32_t>& shards, twins::Millis lease) {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  pg::ArrayLiteral ids;
  for (uint32_t s : shards) ids.integer(s);
  auto rows = db_->exec(
      lease_sql(std::string(kLockFreeInOrder) +
                "UPDATE doppel_partitions p SET owner = $1, epoch = p.epoch + 1, expires_at = "
                "{until}, claimed_at = now() FROM locked WHERE p.partition_id = locked.id AND "
                "(p.owner = '' OR p.expires_at IS NULL OR p.expires_at <= now()) RETURNING "
                "p.partition_id, p.epoch"),
      pg::Params().text(node).integer(lease).array(ids));
  if (!rows) return rows.status();
  std::vector<twins::HeldShard> got;
  for (size_t r = 0; r < rows->size(); ++r) {
    got.emplace_back(static_cast<uint32_t>(rows->integer(r, 0)),
                     static_cast<uint64_t>(rows->integer(r, 1)));
  }
  return got;
}

Result<std::vector<uint32_t>> PostgresLeaseTable::renew(const std::string& node,
                                                        const std::vector<twins::HeldShard>& held,
                                                        twins::Millis lease) {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  const auto [ids, epochs] = held_arrays(held);
  auto rows = db_->exec(
      lease_sql(std::string(kLockInOrder) +
                "UPDATE doppel_partitions p SET expires_at = {until} FROM locked, "
                "unnest($3::bigint[], $4::bigint[]) AS h(id, epoch) WHERE p.partition_id = "
                "locked.id AND p.partition_id = h.id AND p.epoch = h.epoch AND p.owner = $1 "
                "RETURNING p.partition_id"),
      pg::Params().text(node).integer(lease).array(ids).array(epochs));
  if (!rows) return rows.status();
  std::vector<uint32_t> renewed;
  for (size_t r = 0; r < rows->size(); ++r) {
    renewed.push_back(static_cast<uint32_t>(rows->integer(r, 0)));
  }
  return renewed;
}

Status PostgresLeaseTable::release(const std::string& node,
                                   const std::vector<twins::HeldShard>& held) {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  const auto [ids, epochs] = held_arrays(held);
  auto rows = db_->exec(
      std::string(kLockInOrderRelease) +
          "UPDATE doppel_partitions p SET owner = '', expires_at = now() FROM locked, "
          "unnest($2::bigint[], $3::bigint[]) AS h(id, epoch) WHERE p.partition_id = locked.id "
          "AND p.partition_id = h.id AND p.epoch = h.epoch AND p.owner = $1",
      pg::Params().text(node).array(ids).array(epochs));
  return rows ? Status::ok() : rows.status();
}

Status PostgresLeaseTable::leave(const std::string& node) {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  auto rows = db_->exec("DELETE FROM doppel_nodes WHERE node = $1", pg::Params().text(node));
  return rows ? Status::ok() : rows.status();
}

Result<std::vector<twins::ShardLease>> PostgresLeaseTable::leases() {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  auto rows = db_->exec(
      "SELECT partition_id, owner, epoch, (owner = '' OR expires_at IS NULL OR expires_at <= "
      "now()) FROM doppel_partitions ORDER BY partition_id");
  if (!rows) return rows.status();
  std::vector<twins::ShardLease> out;
  for (size_t r = 0; r < rows->size(); ++r) {
    out.push_back({static_cast<uint32_t>(rows->integer(r, 0)), rows->text(r, 1),
                   static_cast<uint64_t>(rows->integer(r, 2)), rows->text(r, 3) == "t"});
  }
  return out;
}

void PostgresLeaseTable::set_advertise(std::string url) {
  std::lock_guard lock(mu_);
  advertise_ = std::move(url);
}

Result<std::vector<ClusterMember>> PostgresLeaseTable::members() {
  std::lock_guard lock(mu_);
  if (Status s = connect(); !s) return s;
  auto rows = db_->exec(
      "SELECT node, advertise, alive_until > now(), "
      "extract(epoch FROM now() - heartbeat_at)::float8::text, "
      "extract(epoch FROM now() - started_at)::float8::text FROM doppel_nodes ORDER BY node");
  if (!rows) return rows.status();
  std::vector<ClusterMember> out;
  for (size_t r = 0; r < rows->size(); ++r) {
    ClusterMember m;
    m.node = rows->text(r, 0);
    m.advertise = rows->text(r, 1);
    m.alive = rows->text(r, 2) == "t";
    m.since_heartbeat_s = std::stod(rows->text(r, 3));
    m.up_s = std::stod(rows->text(r, 4));
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace doppel::storage
