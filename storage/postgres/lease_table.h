// The cluster's lease table on PostgreSQL (twins/leases.h): each partition's row of
// doppel_partitions is its lease (owner, epoch, expires_at by the server's clock), the row the
// store's writer checks every write against (SELECT ... FOR SHARE in the write's transaction), and
// doppel_nodes holds the membership. Every operation is one statement: a compare-and-set UPDATE
// whose WHERE PostgreSQL re-checks against the row's latest version, so two nodes never both take
// a row. It has a connection of its own (a lease round must not wait behind a group commit) with
// statement_timeout and idle_in_transaction_session_timeout well under a lease, reconnecting on
// the next call after a failure.
//
// Thread-safety: every method from any thread (one connection, one call at a time).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "twins/leases.h"

namespace doppel::storage {

namespace pg {
class Connection;
}

// A cluster member as doppel_nodes has it.
struct ClusterMember {
  std::string node;       // its incarnation (node id and start-up nonce)
  std::string advertise;  // where other nodes reach its HTTP API
  bool alive = false;     // its heartbeat's lease has not run out (by the database's clock)
  double since_heartbeat_s = 0;
  double up_s = 0;  // since it joined
};

class PostgresLeaseTable : public twins::LeaseTable {
 public:
  // Connects to `uri` and brings its schema up to date (the store's migrations).
  static Result<std::unique_ptr<PostgresLeaseTable>> open(const std::string& uri);
  ~PostgresLeaseTable() override;

  Result<std::vector<std::string>> heartbeat(const std::string& node, twins::Millis lease) override;
  Result<std::vector<twins::HeldShard>> acquire(const std::string& node,
                                                const std::vector<uint32_t>& shards,
                                                twins::Millis lease) override;
  Result<std::vector<uint32_t>> renew(const std::string& node,
                                      const std::vector<twins::HeldShard>& held,
                                      twins::Millis lease) override;
  Status release(const std::string& node, const std::vector<twins::HeldShard>& held) override;
  Status leave(const std::string& node) override;
  Result<std::vector<twins::ShardLease>> leases() override;

  // The address heartbeat() records for its node, from the next heartbeat on.
  void set_advertise(std::string url);
  // Every node in doppel_nodes, alive or not (a node that left gracefully is gone), by name.
  Result<std::vector<ClusterMember>> members();

 private:
  explicit PostgresLeaseTable(std::string uri);
  Status connect();  // with mu_ held

  const std::string uri_;
  std::mutex mu_;
  std::unique_ptr<pg::Connection> db_;
  std::string advertise_;  // under mu_
};

}  // namespace doppel::storage
