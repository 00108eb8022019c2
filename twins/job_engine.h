// JobEngine: creates jobs, dispatches their executions to twins at each job's rate, and moves
// jobs to completed / aborted / cancelled (README, "Jobs").
//
// The store is the truth. A job and its pending executions are written in one transaction
// (snapshot targeting resolves the query at that commit). Dispatching an execution is a RunJob
// request to the twin's actor, which applies the action and records the execution in progress
// in the same write (TwinLogic::run_job); until that write commits, the execution stays pending
// in the store, and the engine keeps it in its in-flight set so it is not sent twice. After a
// crash, whatever committed is in progress (the twin carries it on) and whatever did not is
// pending (dispatched again): no twin gets the action twice, and a twin that already runs the
// job ignores it. Each job's rate is a token bucket that starts empty, also after a restart.
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
  Millis tick_ms = 5;             // dispatch rounds
  Millis count_every_ms = 200;    // how often a running job's counts are read (abort, end)
  Millis rescan_every_ms = 1000;  // continuous jobs: how often the query looks for new twins
  // Dispatched, not yet committed, per job: bounds how much of the job waits in the shards'
  // queues ahead of everyone else's requests and device messages (docs/performance.md: 64 was
  // as fast as 256 or 1,024 and cut an operator's PATCH p99 during a rollout to 104 ms).
  size_t max_in_flight = 64;
  bool history = true;   // job.changed events (--history)
  bool threaded = true;  // false: nothing runs by itself; tests call tick()
};

class JobEngine {
 public:
  JobEngine(JobEngineOptions options, Runtime& runtime, TwinStore& store, Clock& clock,
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

  // One dispatch round at the clock's time (the engine's thread runs one every tick_ms).
  void tick();
  size_t running() const;

 private:
  struct Job {
    JobRecord record;
    std::shared_ptr<const JobSpec> spec;
    double tokens = 0;
    Millis last_refill = 0;
    Millis next_count = 0;
    Millis next_scan = 0;
    // Continuous jobs: whether a scan for newly matching twins is under way, and how long the
    // last one took (real time).
    struct Scan {
      std::atomic<bool> running{false};
      std::atomic<int64_t> took_ms{0};
    };
    std::shared_ptr<Scan> scan = std::make_shared<Scan>();
    std::string cursor;  // pending executions are read after this twin
    std::unordered_set<std::string> in_flight;
    JobCounts counts;
  };
  struct Done {
    std::string job;
    std::string twin;
    Status status;
  };

  void run();
  void drain_done();
  void dispatch(Job& job, Millis now);
  // Ends `job` with `status`: a job-level write (cancelling what is still pending unless it
  // completed) with its job.changed event; waits for the commit.
  Status end_job(Job& job, JobStatus status, const Cause& cause, Millis now);
  Status write_and_wait(TwinWrite write);
  EventRecord job_event(const JobRecord& job, const Cause& cause) const;
  Result<std::shared_ptr<const JobSpec>> spec_of(const JobRecord& record) const;

  JobEngineOptions options_;
  Runtime& runtime_;
  TwinStore& store_;
  Clock& clock_;
  Counter* dispatched_;
  Counter* dispatch_errors_;
  Counter* ended_;

  mutable std::mutex mu_;            // jobs_
  std::map<std::string, Job> jobs_;  // running jobs
  std::mutex create_mu_;             // one create at a time: the id check and its write
  std::mutex done_mu_;
  std::vector<Done> done_;  // dispatch replies, drained by tick()

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace doppel::twins
