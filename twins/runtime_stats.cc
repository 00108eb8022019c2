#include "twins/runtime_stats.h"

#include <string>

namespace doppel::twins {

RuntimeStats::RuntimeStats(Metrics& m) {
  for (size_t i = 0; i < kInboundKindCount; ++i) {
    const auto k = static_cast<InboundKind>(i);
    in[i] = &m.counter("doppel_device_messages_total", "Device messages received by the runtime",
                       "kind=\"" + std::string(to_string(k)) + "\"");
  }
  for (size_t e = 0; e < kTwinEventCount; ++e) {
    events[e] = &m.counter("doppel_twin_events_total", "Twin events by type",
                           "event=\"" + std::string(to_string(static_cast<TwinEvent>(e))) + "\"");
  }
  for (auto c : {StatusCode::kMalformed, StatusCode::kInvalidArgument, StatusCode::kInvalidId,
                 StatusCode::kTooLarge, StatusCode::kTooDeep}) {
    rejected[static_cast<size_t>(c)] =
        &m.counter("doppel_device_messages_rejected_total",
                   "Device messages rejected with an error reply, by code",
                   "code=\"" + std::string(code_name(c)) + "\"");
  }
  rejected_other =
      &m.counter("doppel_device_messages_rejected_total",
                 "Device messages rejected with an error reply, by code", "code=\"other\"");
  api_calls = &m.counter("doppel_api_calls_total", "Operator requests run by the runtime");
  wakes = &m.counter("doppel_twin_wakes_total", "Twins loaded from the store into memory");
  evictions = &m.counter("doppel_twin_evictions_total", "Twins hibernated (dropped from memory)");
  alarms = &m.counter("doppel_alarms_fired_total", "Twin alarms that fired and changed a twin");
  lateness =
      &m.histogram("doppel_alarm_lateness_seconds", "How late alarms fired after their deadline",
                   {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5});
  inbox_stage = &m.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"inbox\"");
  step_stage = &m.histogram(kStageMetric, kStageHelp, stage_bounds(), "stage=\"step\"");
  m.gauge_fn("doppel_alarm_lateness_max_seconds", "The latest any alarm fired after its deadline",
             [this] { return static_cast<double>(lateness_max_ms.value()) / 1000.0; });
  early = &m.counter("doppel_alarms_early_total",
                     "Alarms that fired before their deadline (must stay 0)");
  rechecks = &m.counter("doppel_alarm_rechecks_total",
                        "Twins whose timer came up and found nothing due yet (an earlier "
                        "deadline kept in the store, or one the twin moved since)");
  internal_errors = &m.counter("doppel_shard_internal_errors_total",
                               "Unexpected exceptions in shard handlers (request failed, twin "
                               "reloaded)");
  store_failures = &m.counter("doppel_store_failures_total",
                              "Twin changes the store failed to commit (twin reloaded)");
  foreign = &m.counter("doppel_device_messages_foreign_total",
                       "Device messages left to another cluster node: their twin's partition is "
                       "not served here");
  ignored = &m.counter("doppel_device_messages_ignored_total",
                       "Device messages for unknown twins that create nothing (results, wills)");
  total = &m.gauge("doppel_twins", "Registered twins (in memory or hibernated)");
  for (size_t i = 0; i < kCommandStatusCount; ++i) {
    const auto st = static_cast<CommandStatus>(i);
    const std::string label = "status=\"" + std::string(to_string(st)) + "\"";
    transitions[static_cast<size_t>(st)] =
        &m.counter("doppel_command_transitions_total", "Commands entering each state", label);
    if (!is_terminal(st)) {
      unfinished[static_cast<size_t>(st)] =
          &m.gauge("doppel_commands_unfinished", "Commands queued or sent, over all twins", label);
    }
  }
}

void RuntimeStats::transition(std::optional<CommandStatus> from, CommandStatus to) {
  transitions[static_cast<size_t>(to)]->inc();
  if (from && !is_terminal(*from)) unfinished[static_cast<size_t>(*from)]->add(-1);
  if (!is_terminal(to)) unfinished[static_cast<size_t>(to)]->add(1);
}

}  // namespace doppel::twins
