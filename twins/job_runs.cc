// TwinLogic's job runs (jobs.h): starting a job's execution on the twin, settling it from the
// twin's state after every step, and abandoning it when the twin goes. Built on the other rules.
#include "twins/twin_logic.h"

#include <algorithm>

namespace doppel::twins {

void TwinLogic::run_job(Twin& twin, const JobSpec& spec, Millis now, Outcome& out) const {
  for (const JobRun& r : twin.jobs) {
    if (r.job == spec.id) return;  // already running it: the action is applied once
  }
  ExecutionRecord exec{spec.id, twin.id, ExecStatus::kInProgress, 1, now, {}};
  JobRun run;
  run.job = spec.id;
  run.retries = spec.retries;
  run.deadline = now + seconds_to_ms(spec.timeout_s);
  if (spec.desired) {
    const UpdateDesired patch{*spec.desired, false, std::nullopt};
    if (Status s = update_desired(twin, patch, now, out); !s) {
      exec.status = ExecStatus::kFailed;
      exec.detail = s.message();
      out.job_updates.push_back(std::move(exec));
      return;
    }
    run.desired_version = twin.desired_version;
  } else if (spec.command) {
    CommandRequest request = *spec.command;
    request.idempotency_key = job_command_key(spec.id, 1);
    auto cmd = enqueue(twin, request, now, out);
    if (!cmd) {
      exec.status = ExecStatus::kFailed;
      exec.detail = cmd.status().message();
      out.job_updates.push_back(std::move(exec));
      return;
    }
    run.is_command = true;
    run.command_name = spec.command->name;
    run.command_args = spec.command->args;
    run.command_ttl_s = spec.command->ttl_s;
    run.command_id = (*cmd)->id;
  }
  twin.jobs.push_back(std::move(run));
  out.job_updates.push_back(std::move(exec));
  out.twin_changed = true;
}

void TwinLogic::settle_jobs(Twin& twin, Millis now, Outcome& out) const {
  for (size_t i = 0; i < twin.jobs.size();) {
    JobRun& run = twin.jobs[i];
    std::optional<ExecStatus> end;
    std::string detail;
    if (!run.is_command) {
      if (twin.desired_version > run.desired_version && !run.superseded) {
        run.superseded = true;
        out.twin_changed = true;
      }
      const bool reached = twin.reconcile_desired_version >= run.desired_version;
      if (reached && twin.reconcile == ReconcileState::kConverged) {
        end = ExecStatus::kSucceeded;
        if (run.superseded) {
          detail = "superseded by desired version " + std::to_string(twin.desired_version) +
                   ", on which the twin converged";
        }
      } else if (reached && twin.reconcile == ReconcileState::kFailed) {
        end = ExecStatus::kFailed;
        detail =
            "reconciliation failed after " + std::to_string(twin.reconcile_attempts) + " attempts";
      }
    } else {
      const Command* c = find_command(twin, run.command_id);
      if (c == nullptr) {
        end = ExecStatus::kFailed;
        detail = "command " + run.command_id + " is no longer kept";
      } else if (c->status == CommandStatus::kSucceeded) {
        end = ExecStatus::kSucceeded;
      } else if (is_terminal(c->status)) {
        detail = "command " + std::string(to_string(c->status)) +
                 (c->error.empty() ? std::string() : ": " + c->error);
        if (run.attempts <= run.retries) {
          CommandRequest request{run.command_name, run.command_args, run.command_ttl_s,
                                 job_command_key(run.job, run.attempts + 1)};
          auto cmd = enqueue(twin, request, now, out);  // may move twin.commands, not twin.jobs
          if (cmd) {
            ++run.attempts;
            run.command_id = (*cmd)->id;
            out.twin_changed = true;
            out.job_updates.push_back({run.job, twin.id, ExecStatus::kInProgress, run.attempts, now,
                                       "retry after " + detail});
          } else {
            end = ExecStatus::kFailed;
            detail += "; the retry was refused: " + cmd.status().message();
          }
        } else {
          end = ExecStatus::kFailed;
        }
      }
    }
    if (!end && now >= run.deadline) {
      end = ExecStatus::kTimedOut;
      detail = "no outcome within the job's timeout_s of its dispatch";
    }
    if (!end) {
      ++i;
      continue;
    }
    out.job_updates.push_back({run.job, twin.id, *end, run.attempts, now, std::move(detail)});
    twin.jobs.erase(twin.jobs.begin() + static_cast<std::ptrdiff_t>(i));
    out.twin_changed = true;
  }
}

void TwinLogic::abandon_jobs(Twin& twin, Millis now, std::string_view why,
                             std::vector<ExecutionRecord>& out) {
  for (const JobRun& run : twin.jobs) {
    out.push_back({run.job, twin.id, ExecStatus::kFailed, run.attempts, now, std::string(why)});
  }
  twin.jobs.clear();
}

}  // namespace doppel::twins
