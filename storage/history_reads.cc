#include "storage/history_reads.h"

#include <utility>
#include <vector>

namespace doppel::storage {
namespace {

bool is_content(const std::string& kind) {
  return kind == "desired.updated" || kind == "reported.updated" || kind == "twin.created";
}

std::vector<twins::EventRecord> events_between(HistoryRows& rows, const std::string& twin,
                                               uint64_t after, uint64_t upto) {
  std::vector<twins::EventRecord> out;
  rows.scan_events(twin, after, [&](twins::EventRecord e, uint64_t) {
    if (e.seq > upto) return false;
    out.push_back(std::move(e));
    return true;
  });
  return out;
}

}  // namespace

twins::HistorySlice read_history_slice(HistoryRows& rows, const std::string& twin,
                                       const twins::AsOf& at) {
  using By = HistoryRows::By;
  twins::HistorySlice slice;
  // The current incarnation starts at its oldest snapshot's write (older snapshots go with the
  // twin when it is deleted).
  const std::optional<uint64_t> floor = rows.first_step(twin);
  if (!floor) return slice;

  if (at.ts) {
    slice.base = rows.latest_snapshot(twin, By::kTs, false, *at.ts);
    if (!slice.base) return slice;
    // A twin's ts never decreases, and the events of one write share it.
    rows.scan_events(twin, slice.base->seq, [&](twins::EventRecord e, uint64_t) {
      if (e.ts > *at.ts) return false;
      slice.events.push_back(std::move(e));
      return true;
    });
    return slice;
  }

  // The write that made version N: its first event that changed content (or created the twin),
  // then the rest of that write. Versions only grow, so the scan starts after the last snapshot
  // taken before N.
  const uint64_t n = at.version.value_or(0);
  const auto before = rows.latest_snapshot(twin, By::kVersion, true, static_cast<int64_t>(n));
  uint64_t step = 0;
  uint64_t target = 0;
  rows.scan_events(twin, before ? before->seq : *floor - 1,
                   [&](twins::EventRecord e, uint64_t step_seq) {
                     if (step != 0) {
                       if (step_seq != step) return false;
                       target = e.seq;
                       return true;
                     }
                     if (e.version > n) {
                       slice.before_creation = e.kind == "twin.created";
                       return false;
                     }
                     if (e.version == n && is_content(e.kind)) {
                       step = step_seq;
                       target = e.seq;
                     }
                     return true;
                   });
  if (target == 0) return slice;
  slice.base = rows.latest_snapshot(twin, By::kSeq, false, static_cast<int64_t>(target));
  if (slice.base) slice.events = events_between(rows, twin, slice.base->seq, target);
  return slice;
}

std::optional<Cut> make_cut(HistoryRows& rows, const std::string& twin, uint64_t last) {
  auto base = rows.latest_snapshot(twin, HistoryRows::By::kSeq, false, static_cast<int64_t>(last));
  if (!base || base->seq == last) return std::nullopt;
  twins::HistorySlice slice;
  slice.events = events_between(rows, twin, base->seq, last);
  Cut cut;
  cut.twin = twin;
  cut.base_seq = base->seq;
  slice.base = std::move(base);
  uint64_t at_seq = 0;
  twins::Millis at_ts = 0;
  auto state = twins::rebuild(slice, &at_seq, &at_ts);
  if (!state) return std::nullopt;
  cut.snapshot.seq = last;
  cut.snapshot.step_seq = last;  // the events before it are gone
  cut.snapshot.ts = at_ts;
  cut.snapshot.version = state->version;
  cut.snapshot.state = twins::snapshot_text(*state);
  return cut;
}

}  // namespace doppel::storage
