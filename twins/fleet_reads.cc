#include "twins/fleet_reads.h"

#include "twins/record.h"

namespace doppel::twins {

Result<DocumentPage> FleetReads::query(const TwinQuery& q) const {
  auto page = store_.query(q);
  if (!page) return page.status();
  DocumentPage out;
  out.items.reserve(page->first.size());
  for (const auto& stored : page->first) {
    auto twin = from_record(stored);
    if (!twin) return twin.status();
    out.items.push_back(twin_document(*twin, logic_.stale_after_ms(*twin)));
  }
  out.next = std::move(page->second);
  return out;
}

Result<json> FleetReads::as_of(const std::string& id, const AsOf& at, uint64_t version_now,
                               Millis created_at) const {
  if (at.version && *at.version > version_now) {
    return Status(StatusCode::kNotFound, "twin '" + id + "' has not reached version " +
                                             std::to_string(*at.version) + " (it is at version " +
                                             std::to_string(version_now) + ")");
  }
  auto slice = store_.history_slice(id, at);
  if (!slice) return slice.status();
  if ((at.ts && *at.ts < created_at) || slice->before_creation) {
    return Status(StatusCode::kNotFound,
                  "twin '" + id + "' did not exist then: it was created at " +
                      std::to_string(created_at) +
                      " (earlier incarnations of this id are in the change feed)");
  }
  uint64_t seq = 0;
  Millis ts = 0;
  auto state = rebuild(*slice, &seq, &ts);
  if (!state && state.status().code() == StatusCode::kNotFound) {
    return Status(StatusCode::kGone,
                  "the history of twin '" + id +
                      "' at that point was removed by retention (--history-retention-s, "
                      "--history-max-reported-events): " +
                      state.status().message());
  }
  if (!state) return state.status();
  return as_of_document(id, *state, seq, ts);
}

}  // namespace doppel::twins
