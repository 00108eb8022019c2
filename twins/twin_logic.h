// The rules of a twin: how device messages, operator requests and alarms change it, and what it
// must then persist and publish (DESIGN §3, §6, §7). TwinLogic is stateless apart from its
// Policy; every function takes the time as an argument, so tests drive it with any clock.
// Called only by the shard that owns the twin.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "twins/device_io.h"
#include "twins/events.h"
#include "twins/jobs.h"
#include "twins/requests.h"
#include "twins/twin.h"

namespace doppel::twins {

struct Policy {
  Limits limits;
  double default_stale_after_s = 300;
  double reconcile_timeout_s = 30;
  uint32_t reconcile_max_attempts = 10;
  double retry_backoff_cap_s = 600;  // reconcile and command re-delivery backoff cap
  double command_ack_timeout_s = 30;
  uint32_t command_max_attempts = 5;
  size_t command_queue_max = 100;       // unfinished commands per twin
  size_t finished_commands_kept = 100;  // per twin, oldest dropped (--command-history)
  // Record change events (Outcome::changes): the change feed, history and as-of reads (--history).
  bool record_changes = true;
  // AWS dialect: publish …/update/documents (previous and current state) after every update
  // (--aws-documents). Off by default: devices built on the AWS SDKs do not subscribe to it, the
  // change feed is what serves consumers on the operator's side, and building it costs about a
  // third of AWS-dialect ingest (doppel-bench -s aws measures both).
  bool aws_documents = false;
};

// Things worth a log line and a counter.
enum class TwinEvent {
  kCreated,
  kStale,
  kFresh,
  kOnline,
  kOffline,
  kConverged,
  kReconcileSent,
  kReconcileFailed,
  kCommandSent,
  kCommandFinished,
  kCommandExpired,
  kCommandTimedOut,
  kIgnoredCommandResult,
};
constexpr size_t kTwinEventCount = static_cast<size_t>(TwinEvent::kIgnoredCommandResult) + 1;
std::string_view to_string(TwinEvent event);

// What a step changed (to persist) and what must leave the process once that is committed.
struct Outcome {
  bool twin_changed = false;
  std::vector<uint64_t> commands_changed;  // seqs to upsert
  std::vector<uint64_t>
      commands_removed;  // seqs to delete (finished commands past the kept number)
  std::vector<DeviceOutput> outputs;
  std::vector<TwinEvent> events;
  // Deadlines that fired in this step, for lateness metrics.
  std::vector<Millis> fired;
  // Command state changes (from: nullopt for a new command), for the metrics.
  std::vector<std::pair<std::optional<CommandStatus>, CommandStatus>> command_transitions;

  // The change feed (events.h): what this step caused, the events only TwinLogic can describe,
  // the states as they were before the step (the others are their differences), and when.
  Cause cause;
  std::vector<ChangeEvent> changes;
  // Job executions this step started or ended (jobs.h), committed with the twin.
  std::vector<ExecutionRecord> job_updates;
  std::optional<StateMarks> before;
  Millis at = 0;
  // Starts a step on `twin` at `now` for `cause`.
  void begin(const Twin& twin, Millis now, Cause why) {
    cause = std::move(why);
    before = marks_of(twin);
    at = now;
  }

  bool changed() const {
    return twin_changed || !commands_changed.empty() || !commands_removed.empty() ||
           !job_updates.empty();
  }
};

// Makes command ids: [A-Za-z0-9._:-]{1,64}, unique within a twin. Called on the owning shard's
// thread only. Tests inject a deterministic one.
using IdGenerator = std::function<std::string()>;
// 16 random hex digits from a per-thread generator seeded by std::random_device.
IdGenerator random_command_ids();

class TwinLogic {
 public:
  explicit TwinLogic(Policy policy, IdGenerator command_ids = random_command_ids())
      : policy_(std::move(policy)), command_ids_(std::move(command_ids)) {}
  const Policy& policy() const { return policy_; }

  Twin create(const std::string& id, Millis now, Outcome& out) const;

  // Device messages. Errors (bad state documents) change nothing; the caller reports them.
  Status on_reported(Twin& twin, const ReportedMessage& msg, Millis now, Outcome& out) const;
  // AWS dialect: a get of a twin with an empty state is refused (kNotFound), as AWS refuses a
  // shadow that does not exist.
  Status on_get(Twin& twin, const GetMessage& msg, Millis now, Outcome& out) const;
  // The broker saw the device connect (not a message of the device): online and fresh at once;
  // what it is owed goes out with its first message, once it has subscribed.
  void on_connected(Twin& twin, Millis now, Outcome& out) const;
  // AWS dialect: the device deletes its shadow. Desired and reported are cleared (each version
  // bumps, none is reset); tags, settings, commands and jobs are the operator's and stay.
  Status on_delete(Twin& twin, const DeleteMessage& msg, Millis now, Outcome& out) const;
  // AWS dialect, AWS IoT Jobs over the command queue (aws_shadow.h). `target`: "" (jobs/get:
  // the list), "$next" (the next pending execution), "$start-next" (the same, started), or a
  // job id (that execution; kNotFound when there is none).
  Status on_jobs_query(Twin& twin, std::string_view target, const JobsQueryMessage& msg, Millis now,
                       Outcome& out) const;
  // AWS dialect: jobs/{id}/update, the command's result (or IN_PROGRESS, which extends its
  // deadline by stepTimeoutInMinutes when given). kConflict for a command that is not waiting for
  // one (AWS's InvalidStateTransition), kNotFound for an unknown one.
  Status on_job_update(Twin& twin, std::string_view job_id, const JobUpdateMessage& msg, Millis now,
                       Outcome& out) const;
  // `arrived_as` is the encoding the birth itself used; it is the default declared encoding.
  void on_status(Twin& twin, const StatusMessage& msg, Encoding arrived_as, Millis now,
                 Outcome& out) const;
  void on_command_result(Twin& twin, std::string_view command_id, const CommandResultMessage& msg,
                         Millis now, Outcome& out) const;

  // Fires every deadline of the twin that is due at `now`; nothing that is not yet due.
  void on_alarm(Twin& twin, Millis now, Outcome& out) const;
  // The earliest pending deadline: staleness, reconcile retry, command TTL or ack timeout.
  std::optional<Millis> next_deadline(const Twin& twin) const;
  // The effective staleness window: 3 x declared interval, else the twin's, else the default.
  Millis stale_after_ms(const Twin& twin) const;

  // Operator requests.
  Status apply_settings(Twin& twin, const TwinSettings& settings, bool is_patch, Millis now,
                        Outcome& out) const;
  Status update_desired(Twin& twin, const UpdateDesired& request, Millis now, Outcome& out) const;
  // The queued (or, with an idempotency key seen before, the existing) command.
  Result<const Command*> enqueue(Twin& twin, const CommandRequest& request, Millis now,
                                 Outcome& out) const;
  // Cancels an unfinished command and answers its document as cancelled. The document is taken
  // before old finished commands are dropped, which may drop this one from memory at once (the
  // cancel itself is still in `out`, so it is committed: a dropped cancel never comes back as
  // queued).
  Result<json> cancel(Twin& twin, std::string_view command_id, Millis now, Outcome& out) const;
  // The device's credentials changed (issued or revoked by the gateway): credentials.changed
  // events, one per change, when changes are recorded. The twin itself does not change.
  void record_credentials(const std::vector<CredentialChange>& changes, Outcome& out) const;

  // Jobs (jobs.h). Starts `spec`'s execution on the twin: applies its desired patch or enqueues
  // its command (idempotency key job:<id>:1) and records the execution in progress — or ended at
  // once: failed when the action is refused, succeeded when a patch changes nothing on a
  // converged twin. A job the twin already runs is not started again.
  void run_job(Twin& twin, const JobSpec& spec, Millis now, Outcome& out) const;
  // Ends the twin's job executions that its state now decides: convergence on (or past) the
  // job's desired version, reconciliation failed, the command's end (or a retry), the timeout.
  // Runs after every step that began `out`.
  void settle_jobs(Twin& twin, Millis now, Outcome& out) const;
  // Ends every execution in progress on the twin as failed (it is being deleted).
  static void abandon_jobs(Twin& twin, Millis now, std::string_view why,
                           std::vector<ExecutionRecord>& out);

 private:
  static Status no_shadow(const Twin& twin);
  Millis backoff_ms(double base_s, uint32_t attempts) const;
  // An upper bound of the serialized size after the update (exact when it had to be computed),
  // or kTooLarge.
  Result<size_t> check_merged_size(const json& current, size_t current_bytes, const json& patch,
                                   bool replace, std::string_view what) const;
  // The alarm, one concern at a time: staleness (liveness.cc), the reconcile retry
  // (reconcile.cc), command TTLs and ack timeouts (command_queue.cc).
  void liveness_alarm(Twin& twin, Millis now, Outcome& out) const;
  void reconcile_alarm(Twin& twin, Millis now, Outcome& out) const;
  void command_alarms(Twin& twin, Millis now, Outcome& out) const;
  void touch(Twin& twin, Millis now, Outcome& out) const;
  void go_online(Twin& twin, Millis now, Outcome& out) const;
  // What a (re)connected device is owed: the delta and its pending commands.
  void resume_deliveries(Twin& twin, Millis now, Outcome& out) const;
  // A new reconcile cycle (new desired version, or drift after convergence): attempts from 0.
  void start_reconcile(Twin& twin, Millis now, Outcome& out) const;
  // The device (re)connected: send the delta again within the current cycle. Attempts count per
  // desired version across reconnects, so a device that crashes on a delta still ends `failed`;
  // a failed cycle stays failed until the desired state changes.
  void resume_reconcile(Twin& twin, Millis now, Outcome& out) const;
  void send_delta(Twin& twin, const json& delta, Millis now, Outcome& out) const;
  void dispatch_commands(Twin& twin, Millis now, Outcome& out) const;
  void deliver(Twin& twin, Command& command, Millis now, Outcome& out) const;
  void finish(Twin& twin, Command& command, CommandStatus status, Millis now, Outcome& out) const;
  void drop_old_finished_commands(Twin& twin, Outcome& out) const;

  Policy policy_;
  IdGenerator command_ids_;
};

}  // namespace doppel::twins
