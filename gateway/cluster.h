// ClusterNode: a doppeld's membership in a cluster of doppelds on one PostgreSQL database
// (doppeld --cluster, issue #22; the protocol is twins/leases.h, its guarantees docs/scale-out.md).
//
// A thread runs the node's LeaseKeeper round every `renew_every`: heartbeat, renew, rebalance,
// acquire. What the node may serve is copied after each round into a table the shard threads read
// without a lock (serves()), each partition until the time its belief ends by this node's
// monotonic clock — so a node whose lease thread stalls stops serving on time all the same. Each
// partition's epoch goes to the store as its lease is gained (and 0 when it is lost), so that the
// store's fence admits exactly the writes made under the current lease.
//
// A partition is given up in two rounds: the first stops serving it, then runs the runtime's
// drain (every shard has handled what was queued before, and the store has committed it); the
// next round releases it, so its next owner starts from committed state.
//
// Requests for twins of partitions served elsewhere are forwarded to the owner's advertised
// address (forward()), signed with the cluster secret (HMAC-SHA256 over the node, the time, the
// method, the target and the request id); the caller's Authorization header goes along, so the
// owner authenticates the caller itself. A forwarded request is never forwarded again.
//
// Thread-safety: every public member from any thread after start().
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gateway/http_problems.h"
#include "gateway/http_server.h"
#include "twins/document.h"
#include "twins/leases.h"
#include "twins/metrics.h"
#include "twins/ownership.h"
#include "twins/partition.h"

namespace doppel::storage {
class PostgresLeaseTable;
class PostgresTwinStore;
}  // namespace doppel::storage

namespace doppel::gateway {

struct ClusterConfig {
  std::string node_id;    // --node-id: stable across restarts (each start is a new incarnation)
  std::string advertise;  // --advertise: http://host:port, where the other nodes reach this one
  std::string secret;     // the contents of --cluster-secret-file, shared by every node
  twins::LeaseOptions leases;
};

class ClusterNode final : public twins::Ownership {
 public:
  // Opens the lease table on `store_uri` (the store's database). Fails on a missing secret or a
  // malformed advertised address, saying what to do.
  static Result<std::unique_ptr<ClusterNode>> open(ClusterConfig config,
                                                   const std::string& store_uri,
                                                   storage::PostgresTwinStore& store,
                                                   Metrics& metrics);
  ~ClusterNode() override;
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Runs the first round (so the node owns its share of free partitions before it serves), then
  // the lease thread. `drain` must return once everything posted to the runtime before the call
  // has been handled and committed.
  Status start(std::function<void()> drain);
  // A graceful leave: stops serving, drains, gives every partition back, leaves the membership,
  // then waits two rounds for the other nodes to learn the new owners (the API still answers).
  void stop();

  // twins::Ownership
  bool serves(uint32_t partition) const override;
  std::vector<uint32_t> serving() const override;
  std::vector<uint32_t> take_gained() override;

  // Forwards the request `req` for a twin of `partition` to its owner and answers with the owner's
  // answer. nullopt when it may simply be tried again: no live owner other than this node is
  // known, the owner could not be reached (nothing was sent), or it answered that it no longer
  // serves the partition (kNotOwnerHeader, http_problems.h). A request sent whose answer was lost
  // is answered 503 (it may have been applied: the client decides). Blocking: call it on a blocking
  // pool.
  std::optional<HttpResponse> forward(const HttpRequest& req, const std::string& request_id,
                                      uint32_t partition);
  // The incarnation that owns `partition` by the last round's read of the lease table; empty
  // when none is known.
  std::string owner_of(uint32_t partition) const;
  // Whether `req` came from another node of this cluster: a valid signature, at most 60 s old.
  // nullopt when it carries none; false for a bad one.
  std::optional<bool> forwarded(const HttpRequest& req, const std::string& request_id) const;

  const std::string& incarnation() const { return incarnation_; }
  std::chrono::milliseconds lease() const {
    return std::chrono::milliseconds(config_.leases.lease);
  }
  // GET /v1/cluster: this node, the members, and each node's count of partitions.
  twins::json describe() const;
  // How many partitions this node serves now.
  size_t serving_count() const;

 private:
  ClusterNode(ClusterConfig config, std::unique_ptr<storage::PostgresLeaseTable> table,
              storage::PostgresTwinStore& store, Metrics& metrics);
  void loop();
  void round();
  // Reads the lease table and the membership into owner_ and members_ (after a round that
  // answered `round`).
  void refresh(const Status& round);
  std::string signature(const std::string& node, const std::string& at, const HttpRequest& req,
                        const std::string& request_id) const;

  const ClusterConfig config_;
  const std::string incarnation_;  // node id and a start-up nonce
  std::unique_ptr<storage::PostgresLeaseTable> table_;
  storage::PostgresTwinStore& store_;
  twins::LeaseKeeper keeper_;
  std::function<void()> drain_;

  // Until when (steady clock, ms) each partition may be served; 0: not served.
  std::array<std::atomic<int64_t>, twins::kPartitions> serve_until_{};

  mutable std::mutex mu_;  // what follows (taken inside the keeper's lock, never around it)
  std::vector<uint32_t> gained_;
  std::vector<uint32_t> drain_asked_;  // partitions the keeper wants to give up, not drained yet
  std::vector<uint32_t> drained_;      // drained since the keeper asked
  std::vector<uint32_t> releasing_;    // being given up in this round
  bool leaving_ = false;
  std::array<std::string, twins::kPartitions> owner_{};  // by the last round's lease table read
  std::vector<std::pair<std::string, std::string>> members_;  // incarnation -> address (alive)
  twins::json members_doc_ = twins::json::array();
  std::string last_error_;

  Counter* acquired_;
  Counter* lost_;
  Counter* released_;
  Counter* renewed_late_;
  Counter* round_failures_;
  Counter* forwards_;
  Counter* forward_failures_;
  int64_t last_round_ms_ = 0;

  std::thread thread_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
};

}  // namespace doppel::gateway
