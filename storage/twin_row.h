// A twin's row as every store lays it out (twins/record.h): its columns in one order, with their
// type and whether the indexed state columns are among them, and a record's values in that order.
// Each backend's DDL, upserts and binds are generated from this list, so a column is spelled once
// for all of them (the query fields' columns come from twins/twin_columns.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "twins/record.h"

namespace doppel::storage {

struct RowColumn {
  enum class Type { kText, kInteger, kBytes };
  const char* name;
  Type type;
  bool nullable;
  // An indexed column that few writes change (liveness, connection, reconcile, next_deadline),
  // which an upsert leaves as it is when the record says so (TwinRecord::states_changed).
  bool state;
};

inline constexpr size_t kTwinRowColumns = 23;
// The columns, in order: id first; a column added later goes last (a backend's first schema
// step made the ones before it).
const std::array<RowColumn, kTwinRowColumns>& twin_row_columns();

// One column's value: NULL, an integer, or text/bytes (a view into the record).
struct RowValue {
  bool null = false;
  int64_t integer = 0;
  std::string_view text;
};
// `r`'s values, in twin_row_columns() order. The views point into `r`.
std::array<RowValue, kTwinRowColumns> twin_row_values(const twins::TwinRecord& r);

}  // namespace doppel::storage
