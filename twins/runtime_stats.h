// RuntimeStats: what the runtime counts, registered once in the gateway's Metrics. Updates are
// atomic: shards, the store's writer thread and the scanner all record here.
#pragma once

#include <optional>

#include "twins/device_io.h"
#include "twins/metrics.h"
#include "twins/twin.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

struct RuntimeStats {
  explicit RuntimeStats(Metrics& m);
  RuntimeStats(const RuntimeStats&) = delete;
  RuntimeStats& operator=(const RuntimeStats&) = delete;

  // Counts one command state change (from: nullopt for a new command).
  void transition(std::optional<CommandStatus> from, CommandStatus to);

  Counter* in[kInboundKindCount] = {};
  Counter* events[kTwinEventCount] = {};
  Counter* rejected[kStatusCodeCount] = {};
  Counter* rejected_other = nullptr;
  Counter* api_calls = nullptr;
  Counter* wakes = nullptr;
  Counter* evictions = nullptr;
  Counter* alarms = nullptr;
  Histogram* lateness = nullptr;
  Histogram* inbox_stage = nullptr;  // doppel_stage_seconds{stage="inbox"}
  Histogram* step_stage = nullptr;   // {stage="step"}
  Gauge lateness_max_ms;             // rendered in seconds
  Counter* early = nullptr;
  Counter* rechecks = nullptr;  // timers that found nothing due yet
  Counter* store_failures = nullptr;
  Counter* internal_errors = nullptr;
  Counter* ignored = nullptr;
  Counter* foreign = nullptr;  // device messages for partitions this node does not serve
  Gauge* total = nullptr;
  Counter* transitions[kCommandStatusCount] = {};
  Gauge* unfinished[kCommandStatusCount] = {};
};

}  // namespace doppel::twins
