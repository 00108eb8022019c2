// The twin: one device's reported and desired state, versions, metadata, connection, liveness,
// reconciliation and command queue (DESIGN §3, §6, §7). A Twin is plain data owned by exactly one
// shard thread; the rules that change it live in twin_logic.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twins/clock.h"
#include "twins/document.h"

namespace doppel::twins {

enum class Encoding { kJson, kProtobuf };
// The topic scheme a device speaks (mqtt/topics.h): Doppel's own, or AWS IoT's Device Shadow and
// Jobs topics (mqtt/aws_topics.h). Learned from the topics the device uses, like its encoding.
enum class Dialect { kDoppel, kAws };
enum class ConnectionState { kUnknown, kOnline, kOffline };
// kUnknown: the device has never sent anything (provisioned by the API); it still becomes stale.
enum class LivenessState { kUnknown, kFresh, kStale };
enum class ReconcileState { kConverged, kPending, kFailed };
enum class CommandStrategy { kSequential, kBurst };
enum class CommandStatus {
  kQueued,
  kSent,
  kSucceeded,
  kFailed,
  kRejected,
  kExpired,
  kTimedOut,
  kCancelled
};
constexpr size_t kCommandStatusCount = static_cast<size_t>(CommandStatus::kCancelled) + 1;

std::string_view to_string(Encoding v);
std::string_view to_string(Dialect v);
std::string_view to_string(ConnectionState v);
std::string_view to_string(LivenessState v);
std::string_view to_string(ReconcileState v);
std::string_view to_string(CommandStrategy v);
std::string_view to_string(CommandStatus v);
std::optional<Encoding> parse_encoding(std::string_view s);
std::optional<Dialect> parse_dialect(std::string_view s);
std::optional<CommandStrategy> parse_strategy(std::string_view s);
std::optional<CommandStatus> parse_command_status(std::string_view s);
std::optional<ConnectionState> parse_connection_state(std::string_view s);
std::optional<LivenessState> parse_liveness_state(std::string_view s);
std::optional<ReconcileState> parse_reconcile_state(std::string_view s);
bool is_terminal(CommandStatus s);

// How many of a twin's commands wait to be sent and wait for their result.
struct CommandCounts {
  uint64_t queued = 0;
  uint64_t sent = 0;
};

struct CommandTransition {
  CommandStatus status;
  Millis at;
};

struct Command {
  std::string id;    // unique within the twin; names the MQTT topic
  uint64_t seq = 0;  // FIFO order within the twin
  std::string name;
  json args = json::object();
  std::string idempotency_key;  // empty when none was given
  CommandStatus status = CommandStatus::kQueued;
  uint32_t attempts = 0;  // deliveries so far
  Millis created_at = 0;
  std::optional<Millis> expires_at;    // TTL deadline
  std::optional<Millis> ack_deadline;  // while sent: when to re-deliver or time out
  std::vector<CommandTransition> history;
  json result;        // from the device, when it answered
  std::string error;  // from the device, or why the gateway ended it
};

// A job execution in progress on a twin (jobs.h): what the twin's own steps need to end it.
struct JobRun {
  std::string job;
  uint64_t desired_version = 0;  // desired jobs: the version the job's patch produced
  bool superseded = false;       // a later desired change replaced that version
  bool is_command = false;
  // Command jobs: what to send again on a retry, and the current attempt's command.
  std::string command_name;
  json command_args = json::object();
  std::optional<double> command_ttl_s;
  std::string command_id;
  uint32_t attempts = 1;
  uint32_t retries = 0;
  Millis deadline = 0;  // timed out at this time
};

// A message the gateway refused from a device, and why (its errors topic said the same).
struct DeviceError {
  Millis at = 0;
  std::string topic;
  std::string code;  // code_name() of the status
  std::string message;
};

// How many change events a twin may gather before the store keeps another snapshot of its
// history state (as_of.h): an as-of read replays at most about this many.
inline constexpr uint32_t kSnapshotEveryEvents = 64;

struct Twin {
  std::string id;
  uint64_t version = 0;  // bumps on every change to desired or reported
  uint64_t desired_version = 0;
  uint64_t reported_version = 0;
  json desired = json::object();
  json reported = json::object();
  json desired_meta = json::object();  // leaves {"ts": ms, "version": desired_version}
  // Leaves kept compact, since they change with every report: ts, or [ts, device_ts]. The twin
  // document shows them as {"ts": ms} / {"ts": ms, "device_ts": ms} (render_reported_meta).
  json reported_meta = json::object();
  json tags = json::object();

  ConnectionState connection = ConnectionState::kUnknown;
  Millis connection_since = 0;
  LivenessState liveness = LivenessState::kUnknown;
  Millis liveness_since = 0;  // when the liveness state last changed (0: never)
  std::optional<Millis> last_seen;
  std::optional<double> interval_s;     // declared by the device's birth message
  std::optional<double> stale_after_s;  // the twin's own setting (API)
  Encoding encoding = Encoding::kJson;  // declared by the device's birth message
  Dialect dialect = Dialect::kDoppel;   // the topics its device last used

  ReconcileState reconcile = ReconcileState::kConverged;
  uint32_t reconcile_attempts = 0;
  uint64_t reconcile_desired_version = 0;
  std::optional<Millis> reconcile_last_sent;
  std::optional<Millis> reconcile_next_retry;

  CommandStrategy command_strategy = CommandStrategy::kSequential;
  std::vector<Command> commands;  // ordered by seq: unfinished ones and the retained finished ones
  uint64_t next_command_seq = 1;

  Millis created_at = 0;
  Millis updated_at = 0;
  // Change events stored since the last history snapshot. Starts due, so that a new twin, or one
  // stored before snapshots existed, gets one with its next event.
  uint32_t events_since_snapshot = kSnapshotEveryEvents;
  // Job executions in progress on this twin (jobs.h), ended by the twin's own steps.
  std::vector<JobRun> jobs;
  // The last message refused from the device (explain.h), kept at most once a second per code.
  std::optional<DeviceError> last_error;

  // Not persisted: the broker reported this device's connection and it has not spoken since; its
  // first message gets the delta and commands it is owed (it could not take them at connect,
  // before subscribing). Lost with the twin's memory (hibernation, restart): then that first
  // message is treated as any other.
  bool awaiting_first_message = false;
  // Not persisted: upper bounds of the serialized sizes of desired/reported (exact after a load
  // or a write), so most updates pass the size limit without serializing anything.
  size_t desired_bytes = 2;
  size_t reported_bytes = 2;
  // Not persisted: desired and its metadata serialized, valid while desired_version equals
  // serialized_desired_version (most writes change only the reported side).
  std::string desired_text;
  std::string desired_meta_bytes;
  uint64_t serialized_desired_version = UINT64_MAX;
};

CommandCounts command_counts(const Twin& twin);
// The twin document of DESIGN §3 (GET /v1/twins/{id}). `stale_after_ms` is the effective window.
json twin_document(const Twin& twin, Millis stale_after_ms);
// Reported metadata as the document shows it, from the twin's compact leaves.
json render_reported_meta(const json& reported, const json& meta);
// The compact form devices receive on `twins/{id}/twin`.
json device_twin_document(const Twin& twin);
// A command as the API shows it.
json command_document(const Command& command);

Command* find_command(Twin& twin, std::string_view command_id);
size_t unfinished_commands(const Twin& twin);

}  // namespace doppel::twins
