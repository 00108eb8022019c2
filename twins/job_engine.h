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
// Thread-safety: every public member may be called from any thread; create(), get(), list(),
// executions() and cancel() block on the store (call them off network threads).
#pragma once

#include <atomic>
#include <condition_variable>
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
#include "twins/ports.h"
#include "twins/runtime.h"

namespace doppel::twins {

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
  bool record_changes = true;  // job.changed events (--history)
  bool threaded = true;        // false: nothing runs by itself; tests call tick()
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
  };
  struct Done {
    std::string job;
    std::string twin;
    Status status;
  };

  void run();
  void wake();
  bool busy() const;  // some job has work to dispatch or replies to wait for
  void run_rescans();
  // Looks for newly matching twins of the continuous job most overdue, if one is due and the
  // share allows; true if it looked.
  bool rescan_one();
  // Writes the twins matching `where` (not yet targeted by job `id`) as its pending executions,
  // in chunks; with `reset`, first drops what an unfinished creation left. How many it added.
  Result<uint64_t> target(const std::string& id, const QueryExpr& where, bool reset, Millis now);
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

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool wake_ = false;  // under stop_mu_: something changed; the engine's thread runs a round
  std::thread thread_;
  std::thread rescan_thread_;
};

}  // namespace doppel::twins
