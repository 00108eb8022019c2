// Jobs (README, "Jobs"): one action — a desired merge patch or a command — rolled out to the
// twins a query or a list names, at a bounded rate, each twin's outcome tracked as an execution.
//
// The vocabulary lives here: the job's specification as POST /v1/jobs takes it, the job and
// execution rows the store keeps, and JobRun — what a twin itself remembers of a job it is
// running, so that the execution's end (convergence, the command's end, a timeout) is decided by
// the twin's own actor and committed in the same write as the change that ends it. The
// dispatcher is JobEngine (job_engine.h). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twins/device_io.h"
#include "twins/document.h"
#include "twins/query.h"
#include "twins/requests.h"

namespace doppel::twins {

enum class JobStatus { kRunning, kCompleted, kCancelled, kAborted };
enum class ExecStatus { kPending, kInProgress, kSucceeded, kFailed, kTimedOut, kCancelled };
std::string_view to_string(JobStatus s);
std::string_view to_string(ExecStatus s);
std::optional<JobStatus> parse_job_status(std::string_view s);
std::optional<ExecStatus> parse_exec_status(std::string_view s);

// Job ids: [A-Za-z0-9._:-]{1,64}, like command ids.
bool valid_job_id(std::string_view id);

struct JobSpec {
  std::string id;
  // The target: a fleet query (query_text parsed into `where`) or a list of twin ids.
  std::string query_text;
  std::shared_ptr<const QueryExpr> where;
  std::vector<std::string> twins;
  // The action: a desired merge patch, or a command (its idempotency key is the job's).
  std::optional<json> desired;
  std::optional<CommandRequest> command;
  bool continuous = false;  // also twins that come to match later (query targets only)
  double rate_per_s = 100;
  double timeout_s = 3600;  // per execution, from its dispatch
  uint32_t retries = 0;     // command jobs: further commands after one that did not succeed
  double abort_failed_pct = 10;
  uint64_t abort_min_done = 20;
};

// POST /v1/jobs's body, validated (kInvalidArgument / kInvalidQuery naming the field). `id` is
// left empty when the body has none.
Result<JobSpec> parse_job_spec(const json& body, const Limits& limits);
// The largest body POST /v1/jobs takes: a desired document's worth plus the longest list of
// twins it allows (10,000 ids of the longest length, quoted and separated).
size_t max_job_spec_bytes(const Limits& limits);
// The specification as stored and shown: {"target", "action", "mode", "rate_per_s", ...}.
json job_spec_json(const JobSpec& spec);

// The idempotency key of a command job's command for attempt `attempt` (from 1).
std::string job_command_key(std::string_view job, uint32_t attempt);

struct JobRecord {
  std::string id;
  JobStatus status = JobStatus::kRunning;
  Millis created_at = 0;
  Millis updated_at = 0;
  std::string spec;  // job_spec_json as text
};

struct JobCounts {
  uint64_t pending = 0, in_progress = 0, succeeded = 0, failed = 0, timed_out = 0, cancelled = 0;
  uint64_t total() const {
    return pending + in_progress + succeeded + failed + timed_out + cancelled;
  }
  // Ended by the job's own doing (not cancelled): what the abort rule counts.
  uint64_t done() const { return succeeded + failed + timed_out; }
  uint64_t& of(ExecStatus s);
};

// GET /v1/jobs/{id}: {"id", "status", "created_at", "updated_at", "target", "action", "mode",
// ..., "total", "counts": {...}}.
json job_document(const JobRecord& job, const JobCounts& counts);

struct ExecutionRecord {
  std::string job;
  std::string twin;
  ExecStatus status = ExecStatus::kPending;
  uint32_t attempts = 0;
  Millis updated_at = 0;
  std::string detail;
};
// {"twin", "status", "attempts", "updated_at", "detail"}.
json execution_json(const ExecutionRecord& e);

}  // namespace doppel::twins
