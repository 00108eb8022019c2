// The columns a store keeps beside a twin's body for fleet queries (record.h), as one table: the
// query language's fixed fields (query.h), the name of the column every store gives each, its
// type, and its value in a record. The parser, the stores' SQL compilers and the reference
// evaluator (query_eval.h) all read them from here, so a field is spelled once.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "twins/document.h"
#include "twins/query.h"
#include "twins/record.h"

namespace doppel::twins {

struct TwinColumn {
  std::string_view field;   // as the query language spells it: "liveness.state"
  std::string_view column;  // as the stores name it: "liveness"
  QueryField::Type type;    // kText or kNumber
  bool nullable;            // may be missing (a twin never seen has no last_seen)
  // The record's value: a string or a number, nullopt when missing.
  std::optional<json> (*value)(const TwinRecord& record);
};

// Every fixed field, in the order the query language documents them.
std::span<const TwinColumn> twin_columns();
// The fixed field `field` names, or nullptr.
const TwinColumn* find_twin_column(std::string_view field);

// The store column a query field is read from: its document's (desired, reported, tags) for a
// JSON field, its own for a fixed one; "NULL" (no value) for a name the parser would refuse.
// NUL-terminated.
std::string_view field_column(const QueryField& field);
// Whether the field may have no value: a JSON field, or a nullable fixed one.
bool field_nullable(const QueryField& field);

}  // namespace doppel::twins
