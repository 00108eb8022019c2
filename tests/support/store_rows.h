// Rows for the store tests: a twin write with every column a store keeps, a change event, and a
// write that waits for its commit. For any store (the contract suite runs over each).
#pragma once

#include <doctest/doctest.h>

#include <future>
#include <optional>
#include <string>

#include "twins/partition.h"
#include "twins/record.h"

namespace doppel::testing {

// An empty write of twin `id`, under the first ownership epoch (set `epoch` from the store's
// epoch() for one that claimed a later one: a reopened PostgreSQL store).
inline twins::TwinWrite change(const std::string& id) {
  twins::TwinWrite w;
  w.id = id;
  w.partition = twins::partition_of(id);
  w.epoch = twins::kFirstEpoch;
  return w;
}

// A write of twin `id` with every column a store keeps.
inline twins::TwinWrite row(const std::string& id, uint64_t version,
                            std::optional<twins::Millis> deadline = {},
                            const std::string& reported = "{}") {
  twins::TwinWrite w = change(id);
  twins::TwinRecord r;
  r.id = id;
  r.version = version;
  r.desired = R"({"d":1})";
  r.reported = reported;
  r.body = std::string("\x00\x01\x02", 3);  // bytes, NUL included
  r.next_deadline = deadline;
  r.updated_at = 1000 + static_cast<twins::Millis>(version);
  w.twin = r;
  return w;
}

inline twins::EventRecord event(const std::string& twin, const std::string& kind,
                                twins::Millis ts) {
  twins::EventRecord e;
  e.ts = ts;
  e.twin = twin;
  e.kind = kind;
  e.version = 1;
  e.body = R"({"cause":{"source":"api"}})";
  return e;
}

// Queues `w` (a TwinWrite or a JobWrite) and requires that it commits.
template <typename Store, typename Write>
void write_and_wait(Store& store, Write w) {
  std::promise<Status> done;
  store.write(std::move(w), [&](const Status& st) { done.set_value(st); });
  const Status s = done.get_future().get();
  REQUIRE_MESSAGE(s, s.to_string());
}

}  // namespace doppel::testing
