#include "twins/job_engine.h"

#include <algorithm>
#include <chrono>
#include <future>

#include "twins/log.h"
#include "twins/partition.h"
#include "twins/thread_name.h"

namespace doppel::twins {
namespace {

// Tokens a job may save up: a tenth of a second of its rate (at least one dispatch).
double burst_of(double rate_per_s) { return std::max(1.0, rate_per_s / 10); }

}  // namespace

JobEngine::JobEngine(JobEngineOptions options, Runtime& runtime, JobStore& store, Clock& clock,
                     Metrics& metrics)
    : options_(options),
      runtime_(runtime),
      store_(store),
      clock_(clock),
      dispatched_(&metrics.counter("doppel_job_dispatches_total",
                                   "Job executions dispatched to twins (actions sent)")),
      dispatch_errors_(&metrics.counter(
          "doppel_job_dispatch_errors_total",
          "Job dispatches a twin could not take (retried later), or whose twin does not exist")),
      ended_(&metrics.counter("doppel_jobs_ended_total",
                              "Jobs that completed, were cancelled or aborted")) {
  metrics.gauge_fn("doppel_jobs_running", "Jobs dispatching or waiting for their executions",
                   [this] { return static_cast<double>(running()); });
  store_.on_job_counts([this](const std::vector<std::string>& jobs) {
    {
      std::lock_guard lock(done_mu_);
      recount_.insert(jobs.begin(), jobs.end());
    }
    wake();
  });
}

JobEngine::~JobEngine() {
  stop();
  store_.on_job_counts({});
}

void JobEngine::wake() {
  {
    std::lock_guard lock(stop_mu_);
    wake_ = true;
  }
  stop_cv_.notify_all();
}

Result<std::shared_ptr<const JobSpec>> JobEngine::spec_of(const JobRecord& record) const {
  const json stored = json::parse(record.spec, nullptr, false);
  auto spec = parse_job_spec(stored, options_.limits);
  if (!spec) {
    return Status(StatusCode::kInternal,
                  "stored job '" + record.id + "' cannot be read: " + spec.status().message());
  }
  spec->id = record.id;
  return std::make_shared<const JobSpec>(std::move(*spec));
}

Result<JobEngine::Job> JobEngine::load(JobRecord record, Millis now) const {
  auto spec = spec_of(record);
  if (!spec) return spec.status();
  Job job;
  job.spec = std::move(*spec);
  job.epoch = epoch_of(record.id);
  job.record = std::move(record);
  job.last_refill = now;  // the bucket starts empty: the rate holds across a restart
  return job;
}

uint64_t JobEngine::epoch_of(const std::string& job) const {
  return clustered() ? options_.cluster.epochs->epoch(partition_of(job)) : 0;
}

void JobEngine::fence(JobWrite& w, const std::string& job, uint64_t epoch) const {
  if (!clustered()) return;
  w.partition = partition_of(job);
  w.epoch = epoch;
}

Status JobEngine::start() {
  // A cluster node takes the jobs of its partitions as it holds them (adopt()).
  std::string after;
  while (!clustered()) {
    auto page = store_.jobs(JobStatus::kRunning, after, 500);
    if (!page) return page.status();
    for (JobRecord& r : *page) {
      after = r.id;
      auto job = load(std::move(r), clock_.now_ms());
      if (!job) return job.status();
      std::lock_guard lock(mu_);
      jobs_.emplace(job->record.id, std::move(*job));
    }
    if (page->size() < 500) break;
  }
  if (!jobs_.empty()) log_info("jobs: resuming " + std::to_string(jobs_.size()) + " running");
  if (options_.threaded) {
    thread_ = std::thread([this] {
      name_this_thread("jobs");
      run();
    });
    rescan_thread_ = std::thread([this] {
      name_this_thread("jobs-rescan");
      run_rescans();
    });
  }
  return Status::ok();
}

void JobEngine::stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (rescan_thread_.joinable()) rescan_thread_.join();
}

bool JobEngine::busy() const {
  std::lock_guard lock(mu_);
  for (const auto& [id, job] : jobs_) {
    if (!job.in_flight.empty() || job.counts.pending > 0) return true;
  }
  return false;
}

void JobEngine::run() {
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    wake_ = false;
    lock.unlock();
    bool more = false;
    try {
      tick();
      more = busy();
    } catch (const std::exception& e) {
      log_error(std::string("jobs: dispatch round failed: ") + e.what());
      more = true;
    }
    lock.lock();
    // A round every tick_ms while some job has work; otherwise only when something changes
    // (a count, a reply, a new job): idle jobs cost nothing. A cluster node also looks for the
    // jobs of partitions it gained, and other nodes' progress on its own, every adopt_every_ms.
    if (more) {
      stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.tick_ms),
                        [this] { return stopping_; });
    } else if (clustered()) {
      stop_cv_.wait_for(lock,
                        std::chrono::milliseconds(std::max<Millis>(1, options_.adopt_every_ms)),
                        [this] { return stopping_ || wake_; });
    } else {
      stop_cv_.wait(lock, [this] { return stopping_ || wake_; });
    }
  }
}

void JobEngine::run_rescans() {
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    lock.unlock();
    bool looked = false;
    try {
      looked = rescan_one();
    } catch (const std::exception& e) {
      log_error(std::string("jobs: looking for newly matching twins failed: ") + e.what());
    }
    lock.lock();
    if (!looked) {
      stop_cv_.wait_for(lock,
                        std::chrono::milliseconds(
                            std::min<Millis>(100, std::max<Millis>(1, options_.rescan_every_ms))),
                        [this] { return stopping_; });
    }
  }
}

bool JobEngine::rescan_one() {
  const Millis now = clock_.now_ms();
  std::string id;
  std::shared_ptr<const JobSpec> spec;
  uint64_t epoch = 0;
  {
    std::lock_guard lock(mu_);
    if (now < next_any_scan_) return false;
    Millis due = 0;
    for (const auto& [job_id, job] : jobs_) {
      if (!job.spec->continuous || job.next_scan > now) continue;
      if (id.empty() || job.next_scan < due) {
        id = job_id;
        due = job.next_scan;
        spec = job.spec;
        epoch = job.epoch;
      }
    }
  }
  if (id.empty()) return false;
  auto added = target(id, *spec->where, false, now, epoch);
  const Millis ended = clock_.now_ms();
  const Millis took_ms = std::max<Millis>(0, ended - now);
  if (!added) {
    log_warn("job " + id +
             ": looking for newly matching twins failed: " + added.status().message());
  }
  std::lock_guard lock(mu_);
  const double share = std::clamp(options_.rescan_share, 0.001, 1.0);
  next_any_scan_ = ended + static_cast<Millis>(static_cast<double>(took_ms) * (1.0 / share - 1.0));
  if (auto it = jobs_.find(id); it != jobs_.end()) {
    it->second.next_scan = now + std::max<Millis>(options_.rescan_every_ms, 20 * took_ms);
    if (added && *added > 0) it->second.recount = true;
  }
  return true;
}

Result<uint64_t> JobEngine::target(const std::string& id, const QueryExpr& where, bool reset,
                                   Millis now, uint64_t epoch) {
  // Chunks are written one after another without waiting; the last one is waited for, and a
  // failure of any of them is an error (the chunks before it stay: pending twins of the job, or
  // what the next creation of that id resets).
  auto failed = std::make_shared<std::optional<Status>>();
  auto failed_mu = std::make_shared<std::mutex>();
  std::string after;
  uint64_t added = 0;
  bool first = true;  // the first chunk resets (with `reset`)
  while (true) {
    auto page = store_.matching_ids(where, reset ? std::string() : id, after, options_.target_page);
    if (!page) return page.status();
    const bool last = page->size() < options_.target_page;
    if (!page->empty() || last) {
      JobWrite w;
      w.targets_job = id;
      w.reset_targets = first && reset;
      first = false;
      w.targets_at = now;
      added += page->size();
      if (!page->empty()) after = page->back();
      w.targets_twins = std::move(*page);
      fence(w, id, epoch);
      if (last) {
        if (Status s = write_and_wait(std::move(w)); !s) return s;
      } else {
        store_.write(std::move(w), [failed, failed_mu](const Status& s) {
          std::lock_guard lock(*failed_mu);
          if (!s && !*failed) *failed = s;
        });
      }
    }
    if (last) break;
  }
  std::lock_guard lock(*failed_mu);  // commits are in order: every chunk has been decided
  if (*failed) return **failed;
  return added;
}

size_t JobEngine::running() const {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

Status JobEngine::write_and_wait(JobWrite write) {
  std::promise<Status> committed;
  auto done = committed.get_future();
  store_.write(std::move(write), [&committed](const Status& s) { committed.set_value(s); });
  return done.get();
}

EventRecord JobEngine::job_event(const JobRecord& job, const Cause& cause) const {
  EventRecord e;
  e.ts = job.updated_at;
  e.kind = "job.changed";
  e.body = to_text(
      json{{"job", job.id}, {"status", to_string(job.status)}, {"cause", cause_json(cause)}});
  return e;
}

Result<json> JobEngine::create(JobSpec spec, const Cause& cause) {
  std::lock_guard create_lock(create_mu_);
  if (spec.id.empty()) spec.id = random_command_ids()();
  auto existing = store_.job(spec.id);
  if (!existing) return existing.status();
  if (*existing) {
    return Status(StatusCode::kConflict, "job '" + spec.id + "' already exists; GET /v1/jobs/" +
                                             spec.id + " shows it, or choose another id");
  }
  const Millis now = clock_.now_ms();
  // In a cluster the request reached the partition's owner: its writes are fenced by the epoch
  // under which it holds the partition now.
  const uint64_t epoch = epoch_of(spec.id);
  JobRecord record{spec.id, JobStatus::kRunning, now, now, to_text(job_spec_json(spec))};
  JobWrite w;
  fence(w, spec.id, epoch);
  if (spec.where) {
    // The targets first (read on a reader, written in chunks), the job row when they are all in.
    if (auto added = target(spec.id, *spec.where, true, now, epoch); !added) {
      return added.status();
    }
  } else {
    w.targets_job = spec.id;
    w.reset_targets = true;
    w.targets_twins = spec.twins;
    w.targets_at = now;
  }
  w.jobs.push_back(record);
  if (options_.record_changes) w.events.push_back(job_event(record, cause));
  if (Status s = write_and_wait(std::move(w)); !s) return s;
  auto counts = store_.job_counts(spec.id);
  if (!counts) return counts.status();
  Job job;
  job.record = record;
  job.spec = std::make_shared<const JobSpec>(std::move(spec));
  job.epoch = epoch;
  job.last_refill = now;
  job.next_scan = now + options_.rescan_every_ms;
  job.counts = *counts;
  log_info("job " + record.id + " created: " + std::to_string(counts->total()) + " twins targeted");
  job.recount = false;
  {
    std::lock_guard lock(mu_);
    jobs_.emplace(record.id, std::move(job));
  }
  wake();
  return job_document(record, *counts);
}

Result<json> JobEngine::get(const std::string& id) {
  auto record = store_.job(id);
  if (!record) return record.status();
  if (!*record) return Status(StatusCode::kNotFound, "job '" + id + "' does not exist");
  auto counts = store_.job_counts(id);
  if (!counts) return counts.status();
  return job_document(**record, *counts);
}

Result<json> JobEngine::list(std::optional<JobStatus> status, const std::string& after,
                             size_t limit) {
  auto page = store_.jobs(status, after, limit + 1);
  if (!page) return page.status();
  const bool more = page->size() > limit;
  if (more) page->pop_back();
  json items = json::array();
  for (const JobRecord& r : *page) {
    auto counts = store_.job_counts(r.id);
    if (!counts) return counts.status();
    items.push_back(job_document(r, *counts));
  }
  return json{{"items", std::move(items)}, {"next_cursor", more ? json(page->back().id) : json()}};
}

Result<json> JobEngine::executions(const std::string& id, std::optional<ExecStatus> status,
                                   const std::string& after, size_t limit) {
  auto record = store_.job(id);
  if (!record) return record.status();
  if (!*record) return Status(StatusCode::kNotFound, "job '" + id + "' does not exist");
  auto page = store_.executions(id, status, after, limit + 1);
  if (!page) return page.status();
  const bool more = page->size() > limit;
  if (more) page->pop_back();
  json items = json::array();
  for (const ExecutionRecord& e : *page) items.push_back(execution_json(e));
  return json{{"items", std::move(items)},
              {"next_cursor", more ? json(page->back().twin) : json()}};
}

Result<json> JobEngine::cancel(const std::string& id, const Cause& cause) {
  // After a creation under way: its job is committed before it is registered here, and a cancel
  // in between must find it.
  std::lock_guard create_lock(create_mu_);
  {
    std::lock_guard lock(mu_);
    if (clustered()) {
      // The request reached the owner of the job's partition, which may have gained it since
      // its last look: look now, so that the job is found here.
      next_adopt_ = 0;
      adopt(clock_.now_ms());
    }
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      Job job = std::move(it->second);
      jobs_.erase(it);  // no dispatch after this point
      if (Status s = end_job(job, JobStatus::kCancelled, cause, clock_.now_ms()); !s) {
        jobs_.emplace(id, std::move(job));
        return s;
      }
      return get(id);
    }
  }
  auto record = store_.job(id);
  if (!record) return record.status();
  if (!*record) return Status(StatusCode::kNotFound, "job '" + id + "' does not exist");
  if ((*record)->status == JobStatus::kRunning) {
    // Not in jobs_ but still running in the store: the engine is ending it at this moment.
    return Status(StatusCode::kConflict, "job '" + id +
                                             "' is ending as this cancel arrives; GET /v1/jobs/" +
                                             id + " shows how it ended");
  }
  return Status(StatusCode::kConflict,
                "job '" + id + "' already ended as " + std::string(to_string((*record)->status)));
}

Status JobEngine::end_job(Job& job, JobStatus status, const Cause& cause, Millis now) {
  job.record.status = status;
  job.record.updated_at = now;
  JobWrite w;
  fence(w, job.record.id, job.epoch);
  w.jobs.push_back(job.record);
  if (status != JobStatus::kCompleted) {
    w.cancel_pending_job = job.record.id;
    w.cancel_detail =
        status == JobStatus::kAborted ? "the job was aborted" : "the job was cancelled";
    w.targets_at = now;
  }
  if (options_.record_changes) w.events.push_back(job_event(job.record, cause));
  Status s = write_and_wait(std::move(w));
  if (s) {
    ended_->inc();
    log_info("job " + job.record.id + " " + std::string(to_string(status)));
  }
  return s;
}

void JobEngine::drain_done() {
  std::vector<Done> done;
  {
    std::lock_guard lock(done_mu_);
    done.swap(done_);
  }
  for (Done& d : done) {
    auto it = jobs_.find(d.job);
    if (it == jobs_.end()) continue;
    Job& job = it->second;
    if (d.status.is_ok()) {
      job.in_flight.erase(d.twin);
      if (job.in_flight.empty()) job.recount = true;  // it may have completed
      continue;
    }
    dispatch_errors_->inc();
    if (d.status.code() == StatusCode::kNotFound) {
      // Recorded by the engine: there is no twin to write it with. The twin stays in flight
      // until this commits, so it is not dispatched again meanwhile.
      JobWrite w;
      fence(w, d.job, job.epoch);
      w.executions.push_back({d.job, d.twin, ExecStatus::kFailed, 0, clock_.now_ms(), "not_found"});
      store_.write(std::move(w), [this, job_id = d.job, twin = d.twin](const Status& s) {
        std::lock_guard lock(done_mu_);
        // Committed: an OK reply leaves the in-flight set; failed: dispatched again later.
        done_.push_back({job_id, twin,
                         s.is_ok() ? Status::ok() : Status(StatusCode::kUnavailable, s.message())});
      });
      continue;
    }
    log_debug("job " + d.job + ": twin " + d.twin + " not dispatched now: " + d.status.to_string());
    job.in_flight.erase(d.twin);
    job.recount = true;
    job.cursor.clear();  // read it again on the next pass
  }
}

void JobEngine::tick() {
  if (!options_.threaded) rescan_one();
  const Millis now = clock_.now_ms();
  std::unordered_set<std::string> recount;
  {
    std::lock_guard lock(done_mu_);
    recount.swap(recount_);
  }
  std::lock_guard lock(mu_);
  if (clustered()) adopt(now);
  drain_done();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    Job& job = it->second;
    const JobSpec& spec = *job.spec;
    if (job.recount || recount.count(job.record.id) != 0) {
      const bool idle = job.in_flight.empty();  // before the count, which then sees all of it
      auto counts = store_.job_counts(job.record.id);
      job.recount = !counts;  // a failed read is tried again in the next round
      if (counts) {
        job.counts = *counts;
        const uint64_t bad = counts->failed + counts->timed_out;
        const bool abort = counts->done() >= spec.abort_min_done &&
                           static_cast<double>(bad) * 100 >
                               spec.abort_failed_pct * static_cast<double>(counts->done());
        std::optional<JobStatus> end;
        if (abort) {
          end = JobStatus::kAborted;
        } else if (!spec.continuous && idle && counts->pending == 0 && counts->in_progress == 0) {
          end = JobStatus::kCompleted;
        }
        if (end) {
          if (end_job(job, *end, Cause{CauseSource::kJob, {}, {}, {}, job.record.id}, now)) {
            it = jobs_.erase(it);
            continue;
          }
          job.recount = true;
        }
      }
    }
    if (job.counts.pending > 0) dispatch(job, now);
    ++it;
  }
}

void JobEngine::dispatch(Job& job, Millis now) {
  const JobSpec& spec = *job.spec;
  job.tokens =
      std::min(burst_of(spec.rate_per_s),
               job.tokens + spec.rate_per_s * static_cast<double>(now - job.last_refill) / 1000.0);
  job.last_refill = now;
  const size_t room =
      options_.max_in_flight - std::min(options_.max_in_flight, job.in_flight.size());
  size_t want = std::min(static_cast<size_t>(job.tokens), room);
  std::vector<std::string> remote;  // a cluster's twins served by other nodes
  // A few pages at most per round: those in flight are skipped without spending tokens.
  for (int page = 0; want > 0 && page < 4; ++page) {
    const size_t limit = want + (job.cursor.empty() ? job.in_flight.size() : 0);
    auto rows = store_.executions(job.record.id, ExecStatus::kPending, job.cursor, limit);
    if (!rows) {
      log_warn("job " + job.record.id +
               ": reading pending executions failed: " + rows.status().message());
      return;
    }
    for (const ExecutionRecord& e : *rows) {
      if (want == 0) break;
      job.cursor = e.twin;
      if (!job.in_flight.insert(e.twin).second) continue;
      --want;
      job.tokens -= 1;
      dispatched_->inc();
      if (clustered() && !options_.cluster.ownership->serves(partition_of(e.twin))) {
        remote.push_back(e.twin);
        continue;
      }
      runtime_.call(
          e.twin, RunJob{job.spec},
          [this, job_id = job.record.id, twin = e.twin](ApiReply r) {
            std::lock_guard lock(done_mu_);
            done_.push_back({job_id, twin, std::move(r.status)});
          },
          Cause{CauseSource::kJob, {}, {}, {}, job.record.id});
    }
    if (rows->size() < limit) {
      job.cursor.clear();  // reached the end: the next pass starts over
      break;
    }
  }
  if (!remote.empty()) {
    options_.cluster.remote->run(
        job.record, std::move(remote),
        [this, job_id = job.record.id](const std::string& twin, const Status& s) {
          std::lock_guard lock(done_mu_);
          done_.push_back({job_id, twin, s});
        });
  }
}

void JobEngine::adopt(Millis now) {
  // Dropped at once: a job whose partition is no longer held at the epoch it was taken under.
  // Its dispatches still in flight are answered into nothing; what they committed is read by the
  // next owner from the store.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const uint32_t p = partition_of(it->first);
    if (!options_.cluster.ownership->serves(p) ||
        options_.cluster.epochs->epoch(p) != it->second.epoch) {
      log_info("job " + it->first + ": partition " + std::to_string(p) +
               " is no longer held here; its new owner runs it");
      it = jobs_.erase(it);
      continue;
    }
    ++it;
  }
  if (now < next_adopt_) return;
  next_adopt_ = now + options_.adopt_every_ms;
  std::string after;
  while (true) {
    auto page = store_.jobs(JobStatus::kRunning, after, 500);
    if (!page) {
      log_warn("jobs: reading the running jobs failed (tried again shortly): " +
               page.status().message());
      return;
    }
    for (JobRecord& r : *page) {
      after = r.id;
      if (jobs_.count(r.id) != 0 || !options_.cluster.ownership->serves(partition_of(r.id))) {
        continue;
      }
      auto job = load(std::move(r), now);
      if (!job) {
        log_error("jobs: " + job.status().message());
        continue;
      }
      log_info("job " + job->record.id + ": taken over (partition " +
               std::to_string(partition_of(job->record.id)) + ")");
      jobs_.emplace(job->record.id, std::move(*job));
    }
    if (page->size() < 500) break;
  }
  // Executions are committed by the twins' owners, which this node's store does not hear of.
  for (auto& [id, job] : jobs_) job.recount = true;
}

void JobEngine::run_for_peer(const std::string& id, Millis created_at,
                             std::vector<std::string> twins,
                             std::function<void(PeerResults)> done) {
  // The spec of a job never changes (an id is taken once; created_at tells a new job of a
  // pruned id apart): read once per job.
  std::shared_ptr<const JobSpec> spec;
  {
    std::lock_guard lock(peer_mu_);
    if (auto it = peer_specs_.find({id, created_at}); it != peer_specs_.end()) spec = it->second;
  }
  if (!spec) {
    Status why = Status::ok();
    auto record = store_.job(id);
    if (!record) {
      why = record.status();
    } else if (!*record || (*record)->created_at != created_at ||
               (*record)->status != JobStatus::kRunning) {
      why = Status(StatusCode::kUnavailable, "job '" + id + "' is not running");
    } else if (auto parsed = spec_of(**record); !parsed) {
      why = parsed.status();
    } else {
      spec = *parsed;
      std::lock_guard lock(peer_mu_);
      if (peer_specs_.size() >= 1000) peer_specs_.clear();
      peer_specs_[{id, created_at}] = spec;
    }
    if (!why) {
      PeerResults results;
      for (std::string& t : twins) results.emplace_back(std::move(t), why);
      return done(std::move(results));
    }
  }
  // Answered once every twin's shard has: the last reply hands the results on.
  struct Pending {
    std::mutex mu;
    PeerResults results;
    size_t left = 0;
    std::function<void(PeerResults)> done;
  };
  auto pending = std::make_shared<Pending>();
  pending->left = twins.size();
  pending->done = std::move(done);
  auto reply = [pending](std::string twin, Status s) {
    std::function<void(PeerResults)> finish;
    PeerResults results;
    {
      std::lock_guard lock(pending->mu);
      pending->results.emplace_back(std::move(twin), std::move(s));
      if (--pending->left > 0) return;
      finish = std::move(pending->done);
      results = std::move(pending->results);
    }
    finish(std::move(results));
  };
  if (twins.empty()) return pending->done({});
  for (std::string& twin : twins) {
    if (clustered() && !options_.cluster.ownership->serves(partition_of(twin))) {
      reply(std::move(twin), Status(StatusCode::kNotOwner, "not served here"));
      continue;
    }
    runtime_.call(
        twin, RunJob{spec}, [reply, twin](ApiReply r) { reply(twin, std::move(r.status)); },
        Cause{CauseSource::kJob, {}, {}, {}, id});
  }
}

}  // namespace doppel::twins
