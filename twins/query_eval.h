// The fleet query language's meaning as plain C++: the reference evaluator. query.h states the
// semantics in words and each store compiles them to its own SQL; this is the oracle those
// compilers are tested against (tests/storage/query_test.cc, fuzz_query), the way a database
// checks its optimiser against a naive executor. Not used to answer queries: it reads one twin.
//
// Pure; thread-safe.
#pragma once

#include <optional>

#include "twins/document.h"
#include "twins/query.h"
#include "twins/record.h"

namespace doppel::twins {

// What a twin holds for `field`: nullopt when missing (a JSON path that leads nowhere, a twin
// never seen for liveness.last_seen). JSON null, objects and arrays are values of no family:
// EXISTS is true for them, every comparison false.
std::optional<json> query_value(const TwinRecord& twin, const QueryField& field);

// Whether `twin` matches `where`, with the typed two-valued semantics of query.h.
bool matches(const QueryExpr& where, const TwinRecord& twin);

}  // namespace doppel::twins
