// ClusterJobs: how a cluster node's job engine reaches twins served by other nodes
// (twins::RemoteJobs; the engine's side is twins/job_engine.h, the receiving route
// POST /v1/cluster/jobs/{id}/run in api_jobs.cc).
//
// The twins of one dispatch round are grouped by the owner of their partitions, as this node last
// read the lease table, and each group goes to its owner in one signed request (ClusterNode::
// forward), on a few threads of its own so that the engine never waits for the network. The owner
// answers per twin; a twin it no longer serves, an owner that cannot be reached, or an answer
// that was lost is "try again later" (the execution stays pending in the store, and a twin that
// already runs the job ignores a second dispatch).
//
// Thread-safety: run() from any thread; stop() once, before the ClusterNode goes away.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "twins/job_engine.h"

namespace doppel::gateway {

class ClusterNode;

class ClusterJobs final : public twins::RemoteJobs {
 public:
  explicit ClusterJobs(ClusterNode& cluster, size_t threads = 4);
  ~ClusterJobs() override;
  ClusterJobs(const ClusterJobs&) = delete;
  ClusterJobs& operator=(const ClusterJobs&) = delete;

  void run(const twins::JobRecord& job, std::vector<std::string> twins, Reply reply) override;
  // Sends nothing more; what is queued is answered "try again later".
  void stop();

 private:
  struct Batch {
    std::string job;
    twins::Millis created_at = 0;
    uint32_t partition = 0;  // of the first twin: the request goes to its owner
    std::vector<std::string> twins;
    Reply reply;
  };
  void loop();
  void send(Batch& batch);

  ClusterNode& cluster_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// The answer's body of POST /v1/cluster/jobs/{id}/run, and its reading on the sending side.
twins::json peer_results_json(const twins::JobEngine::PeerResults& results);

}  // namespace doppel::gateway
