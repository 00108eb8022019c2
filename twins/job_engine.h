// JobEngine: creates jobs, dispatches their executions to twins at each job's rate, and moves
// jobs to completed / aborted / cancelled (README, "Jobs").
//
// The store is the truth. A job's targets are read on a reader, a page at a time
// (JobStore::matching_ids), and written as pending executions in chunks; the job row is written
// last, once all of them committed, so a job that exists has all its targets, and a creation cut
// short leaves only executions that the next creation of that id resets. No query runs inside the
// writer's transaction: a slow or failing one delays and fails nobody else's write. Dispatching
// an execution is a RunJob request to the twin's actor, which applies the action and records the
// execution in progress in the same write (TwinLogic::run_job); until that write commits, the
// execution stays pending in the store, and the engine keeps it in its in-flight set so it is not
// sent twice. After a crash, whatever committed is in progress (the twin carries it on) and
// whatever did not is pending (dispatched again): no twin gets the action twice, and a twin that
// already runs the job ignores it. Each job's rate is a token bucket that starts empty, also after
// a restart. A job's counts are read when the store says they changed (on_job_counts), not
// polled, and a job with nothing pending costs nothing per round.
//
// Continuous jobs look for newly matching twins on a reader too, one job at a time: each job at
// most every rescan_every_ms (or 20 times as long as its last look took), and all of them
// together at most `rescan_share` of the time.
//
// In a cluster (issue #22, docs/scale-out.md) a job is owned like a twin, by the partition of its
// id: each node's engine runs the running jobs of the partitions it serves — adopting them from
// the store as it gains partitions (every quarter second), dropping them as it loses them — and
// every job-level write is fenced by the epoch under which the node took the job, so a former
// owner can neither end nor cancel it. The action for a twin served elsewhere goes to the twin's
// owner through RemoteJobs (batched per owner), which runs it there (run_for_peer). Executions
// are committed by the twins' owners, which this node's store does not hear of: the counts are
// read every quarter second instead. A dispatch whose answer was lost in a failover leaves its
// execution pending; dispatched again, it finds the twin already running the job, which ignores
// it: no twin executes a job twice.
//
// Thread-safety: every public member may be called from any thread; create(), get(), list(),
// executions(), cancel() and run_for_peer() block on the store (call them off network threads).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "twins/clock.h"
#include "twins/jobs.h"
#include "twins/metrics.h"
#include "twins/ownership.h"
#include "twins/ports.h"
#include "twins/runtime.h"

namespace doppel::twins {

// A cluster's way to a twin served by another node (gateway/cluster_jobs.h).
class RemoteJobs {
 public:
  virtual ~RemoteJobs() = default;
  // Called once per twin, from any thread: ok once the twin's owner committed the execution (or
  // the twin was already running the job), kNotFound when there is no such twin; anything else:
  // not run now, try again later.
  using Reply = std::function<void(const std::string& twin, const Status& status)>;
  // Runs `job`'s action on each of `twins` (none of them served here) at their owners. Must not
  // block.
  virtual void run(const JobRecord& job, std::vector<std::string> twins, Reply reply) = 0;
};

// What a cluster node's engine needs (all three, or none for a node on its own).
struct JobCluster {
  Ownership* ownership = nullptr;
  const ShardStore* epochs = nullptr;  // the epoch under which this node holds a partition
  RemoteJobs* remote = nullptr;
};

struct JobEngineOptions {
  Limits limits;
  Millis tick_ms = 5;             // dispatch rounds (while some job has work)
  Millis rescan_every_ms = 1000;  // continuous jobs: how often the query looks for new twins
  // All continuous jobs' looks together take at most this share of (real) time: after a look
  // that took t, the next one starts no sooner than t * (1 / share - 1) later.
  double rescan_share = 0.1;
  size_t target_page = 1000;  // twins read, and executions written, per step of targeting
  // Dispatched, not yet committed, per job: bounds how much of the job waits in the shards'
  // queues ahead of everyone else's requests and device messages (docs/performance.md: 64 was
  // as fast as 256 or 1,024 and cut an operator's PATCH p99 during a rollout to 104 ms).
  size_t max_in_flight = 64;
  bool record_changes = true;   // job.changed events (--history)
  bool threaded = true;         // false: nothing runs by itself; tests call tick()
  JobCluster cluster;           // in a cluster; empty for a node on its own
  Millis adopt_every_ms = 250;  // a cluster node: how often it looks for jobs and their counts
};

class JobEngine {
 public:
  JobEngine(JobEngineOptions options, Runtime& runtime, JobStore& store, Clock& clock,
            Metrics& metrics);
  ~JobEngine();
  JobEngine(const JobEngine&) = delete;
  JobEngine& operator=(const JobEngine&) = delete;

  // Loads the running jobs and starts dispatching.
  Status start();
  void stop();

  // POST /v1/jobs: kConflict when the id exists. The job document, once committed.
  Result<json> create(JobSpec spec, const Cause& cause);
  Result<json> get(const std::string& id);
  // {"items": [job documents], "next_cursor"}.
  Result<json> list(std::optional<JobStatus> status, const std::string& after, size_t limit);
  // {"items": [executions], "next_cursor"}; kNotFound for an unknown job.
  Result<json> executions(const std::string& id, std::optional<ExecStatus> status,
                          const std::string& after, size_t limit);
  // Pending executions become cancelled; kConflict when the job has already ended.
  Result<json> cancel(const std::string& id, const Cause& cause);

  // Another node's dispatch (RemoteJobs): runs job `id` (created at `created_at`) on each of
  // `twins` this node serves; `done` gets each twin's outcome as RemoteJobs::Reply describes,
  // once all of them are known (kNotOwner for a twin not served here, kUnavailable for all when
  // the job is not running).
  using PeerResults = std::vector<std::pair<std::string, Status>>;
  void run_for_peer(const std::string& id, Millis created_at, std::vector<std::string> twins,
                    std::function<void(PeerResults)> done);

  // One dispatch round at the clock's time (the engine's thread runs one every tick_ms). Without
  // a thread (tests), it also looks for newly matching twins of one due continuous job.
  void tick();
  size_t running() const;

 private:
  struct Job {
    JobRecord record;
    std::shared_ptr<const JobSpec> spec;
    double tokens = 0;
    Millis last_refill = 0;
    bool recount = true;   // its counts changed (or may have): read them in the next round
    Millis next_scan = 0;  // continuous jobs: the next look for newly matching twins
    std::string cursor;    // pending executions are read after this twin
    std::unordered_set<std::string> in_flight;
    JobCounts counts;
    uint64_t epoch = 0;  // in a cluster: the epoch of the job's partition when this node took it
  };
  struct Done {
    std::string job;
    std::string twin;
    Status status;
  };

  void run();
  void wake();
  bool clustered() const { return options_.cluster.ownership != nullptr; }
  // In a cluster: the job's write is fenced by its partition's `epoch`.
  void fence(JobWrite& w, const std::string& job, uint64_t epoch) const;
  uint64_t epoch_of(const std::string& job) const;
  // A cluster node: drops the jobs of partitions it no longer holds (at the same epoch), takes
  // the running jobs of those it holds from the store, and marks every job to be counted again.
  void adopt(Millis now);
  // A job as the engine runs it, from its stored record.
  Result<Job> load(JobRecord record, Millis now) const;
  bool busy() const;  // some job has work to dispatch or replies to wait for
  void run_rescans();
  // Looks for newly matching twins of the continuous job most overdue, if one is due and the
  // share allows; true if it looked.
  bool rescan_one();
  // Writes the twins matching `where` (not yet targeted by job `id`) as its pending executions,
  // in chunks; with `reset`, first drops what an unfinished creation left. How many it added.
  Result<uint64_t> target(const std::string& id, const QueryExpr& where, bool reset, Millis now,
                          uint64_t epoch);
  void drain_done();
  void dispatch(Job& job, Millis now);
  // Ends `job` with `status`: a job-level write (cancelling what is still pending unless it
  // completed) with its job.changed event; waits for the commit.
  Status end_job(Job& job, JobStatus status, const Cause& cause, Millis now);
  Status write_and_wait(JobWrite write);
  EventRecord job_event(const JobRecord& job, const Cause& cause) const;
  Result<std::shared_ptr<const JobSpec>> spec_of(const JobRecord& record) const;

  JobEngineOptions options_;
  Runtime& runtime_;
  JobStore& store_;
  Clock& clock_;
  Counter* dispatched_;
  Counter* dispatch_errors_;
  Counter* ended_;

  mutable std::mutex mu_;            // jobs_
  std::map<std::string, Job> jobs_;  // running jobs
  std::mutex create_mu_;             // one create at a time: the id check and its write
  std::mutex done_mu_;
  std::vector<Done> done_;                   // dispatch replies, drained by tick()
  std::unordered_set<std::string> recount_;  // under done_mu_: counts changed (the store said)
  Millis next_any_scan_ = 0;                 // under mu_: no look before this (rescan_share)
  Millis next_adopt_ = 0;                    // under mu_: a cluster node's next adopt()
  std::mutex peer_mu_;                       // peer_specs_
  std::map<std::pair<std::string, Millis>, std::shared_ptr<const JobSpec>> peer_specs_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool wake_ = false;  // under stop_mu_: something changed; the engine's thread runs a round
  std::thread thread_;
  std::thread rescan_thread_;
};

}  // namespace doppel::twins
