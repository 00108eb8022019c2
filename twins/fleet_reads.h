// FleetReads: the operator's reads that go past the twins' actors to the store, answered as
// documents — a page of a fleet query (GET /v1/twins) and a twin as it was (as-of reads). The
// gateway asks for documents; the record format (record.h), the replay of history (as_of.h) and
// the rules that render a twin (TwinLogic) stay in twins/.
//
// Thread-safe; every call blocks on the store (call it off network threads).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "twins/as_of.h"
#include "twins/ports.h"
#include "twins/query.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

struct DocumentPage {
  std::vector<json> items;  // twin documents (DESIGN §3), in the query's order
  std::optional<QueryCursor> next;
};

class FleetReads {
 public:
  FleetReads(FleetStore& store, const TwinLogic& logic) : store_(store), logic_(logic) {}

  // A page of twin documents; kTimeout past q.budget.
  Result<DocumentPage> query(const TwinQuery& q) const;

  // Whether as-of reads can be answered (change events are recorded: --history).
  bool records_changes() const { return logic_.policy().record_changes; }
  // The twin `id` as it was at `at`, given its current version and creation time (read through
  // its actor first, so that everything before is committed): the as-of document, kNotFound
  // when it did not exist then or has not reached that version, kGone when retention removed
  // that point.
  Result<json> as_of(const std::string& id, const AsOf& at, uint64_t version_now,
                     Millis created_at) const;

 private:
  FleetStore& store_;
  const TwinLogic& logic_;
};

}  // namespace doppel::twins
