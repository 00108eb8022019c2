#include "storage/twin_row.h"

#include "twins/partition.h"

namespace doppel::storage {
namespace {

using T = RowColumn::Type;

constexpr std::array<RowColumn, kTwinRowColumns> kColumns = {{
    {"id", T::kText, false, false},
    {"version", T::kInteger, false, false},
    {"desired", T::kText, false, false},
    {"reported", T::kText, false, false},
    {"desired_meta", T::kBytes, false, false},
    {"reported_meta", T::kBytes, false, false},
    {"body", T::kBytes, false, false},
    {"next_deadline", T::kInteger, true, true},
    {"updated_at", T::kInteger, false, false},
    {"tags", T::kText, false, false},
    {"desired_version", T::kInteger, false, false},
    {"reported_version", T::kInteger, false, false},
    {"created_at", T::kInteger, false, false},
    {"liveness", T::kText, false, true},
    {"last_seen", T::kInteger, true, false},
    {"connection", T::kText, false, true},
    {"reconcile", T::kText, false, true},
    {"reconcile_attempts", T::kInteger, false, false},
    {"commands_queued", T::kInteger, false, false},
    {"commands_sent", T::kInteger, false, false},
    {"encoding", T::kText, false, false},
    {"partition_id", T::kInteger, false, false},  // twins/partition.h
    {"dialect", T::kText, false, false},
}};

RowValue text(std::string_view s) { return RowValue{false, 0, s}; }
RowValue integer(int64_t n) { return RowValue{false, n, {}}; }
RowValue maybe(const std::optional<int64_t>& n) { return n ? integer(*n) : RowValue{true, 0, {}}; }

}  // namespace

const std::array<RowColumn, kTwinRowColumns>& twin_row_columns() { return kColumns; }

std::array<RowValue, kTwinRowColumns> twin_row_values(const twins::TwinRecord& r) {
  return {
      text(r.id),
      integer(static_cast<int64_t>(r.version)),
      text(r.desired),
      text(r.reported),
      text(r.desired_meta),
      text(r.reported_meta),
      text(r.body),
      maybe(r.next_deadline),
      integer(r.updated_at),
      text(r.tags),
      integer(static_cast<int64_t>(r.desired_version)),
      integer(static_cast<int64_t>(r.reported_version)),
      integer(r.created_at),
      text(r.liveness),
      maybe(r.last_seen),
      text(r.connection),
      text(r.reconcile),
      integer(static_cast<int64_t>(r.reconcile_attempts)),
      integer(static_cast<int64_t>(r.commands_queued)),
      integer(static_cast<int64_t>(r.commands_sent)),
      text(r.encoding),
      integer(twins::partition_of(r.id)),
      text(r.dialect),
  };
}

}  // namespace doppel::storage
