// The backend-neutral half of as-of reads and of pruning with snapshots (twins/as_of.h): which
// snapshot and which events an as-of read needs, and how the pruner carries a twin's state past
// the point where it cuts the log. A backend supplies the rows (HistoryRows: three reads over its
// snapshot and event tables); the plan is written once, here, for every store.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "twins/as_of.h"

namespace doppel::storage {

// The rows a history read looks at, read by a backend on one consistent view of its tables (one
// read transaction). Failures throw, as the backend's reads do.
class HistoryRows {
 public:
  virtual ~HistoryRows() = default;
  // The smallest step_seq of `twin`'s snapshots: where its current incarnation starts. Nullopt:
  // no snapshot (no such twin, or one that never wrote history).
  virtual std::optional<uint64_t> first_step(const std::string& twin) = 0;
  enum class By { kSeq, kTs, kVersion };
  // `twin`'s latest snapshot (by seq) whose `by` column is at most `bound` (below it, with
  // `strict`).
  virtual std::optional<twins::Snapshot> latest_snapshot(const std::string& twin, By by,
                                                         bool strict, int64_t bound) = 0;
  // Calls `each(event, step_seq)` for `twin`'s events after `after_seq`, in seq order, while it
  // returns true (step_seq: the seq of the first event of the event's write).
  using EachEvent = std::function<bool(twins::EventRecord, uint64_t step_seq)>;
  virtual void scan_events(const std::string& twin, uint64_t after_seq, const EachEvent& each) = 0;
};

// The slice an as-of read of `twin`'s current incarnation needs (twins::HistorySlice).
twins::HistorySlice read_history_slice(HistoryRows& rows, const std::string& twin,
                                       const twins::AsOf& at);

// A snapshot the pruner writes before it deletes `twin`'s events up to `snapshot.seq`: the
// state there, rebuilt from the snapshot `base_seq` and the events after it. The backend stores
// it only if that base snapshot still exists (the twin was not deleted meanwhile) and deletes the
// twin's snapshots before it.
struct Cut {
  std::string twin;
  uint64_t base_seq = 0;
  twins::Snapshot snapshot;
};
// The twin's state right after its event `last`, if it has a snapshot at or before it and every
// event in between. Nullopt: nothing to carry (an earlier incarnation's events, or an unreadable
// gap).
std::optional<Cut> make_cut(HistoryRows& rows, const std::string& twin, uint64_t last);

}  // namespace doppel::storage
