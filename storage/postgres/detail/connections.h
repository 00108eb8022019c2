// The PostgreSQL store's connections, for its implementation files only (storage/postgres/*.cc):
// the writer's, with the multi-row statements of a group commit, and the readers' pool.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "storage/postgres/detail/pg.h"
#include "storage/postgres/postgres_store.h"
#include "storage/twin_row.h"

namespace doppel::storage {

struct PostgresTwinStore::Writer {
  std::unique_ptr<pg::Connection> db;
  // Reconnecting: not before `retry_at`; the wait doubles per failed attempt, up to 5 s.
  std::chrono::steady_clock::time_point retry_at{};
  std::chrono::milliseconds backoff{100};
  // The last failure was a batch refused while waiting to reconnect: said once, by the
  // reconnect's own warning, not per batch.
  bool waiting = false;

  // One array per twin row column (storage/twin_row.h), for the rows of one upsert statement.
  struct TwinColumns {
    std::array<pg::ArrayLiteral, kTwinRowColumns> columns;
    size_t rows = 0;
    void add(const twins::TwinRecord& r);
    void clear();
    pg::Params params() const;
  };
};

template <typename Read>
auto PostgresTwinStore::with_reader(const std::string& what, Read&& read)
    -> decltype(read(std::declval<pg::Connection&>())) {
  std::unique_ptr<pg::Connection> db;
  {
    std::lock_guard lock(readers_mu_);
    if (!readers_.empty()) {
      db = std::move(readers_.back());
      readers_.pop_back();
    }
  }
  if (!db) {
    auto opened = pg::Connection::open(options_.uri);
    if (!opened) return Status(opened.status().code(), what + ": " + opened.status().message());
    db = std::make_unique<pg::Connection>(std::move(*opened));
  }
  try {
    auto out = read(*db);
    if (db->ok()) {
      std::lock_guard lock(readers_mu_);
      if (!closed_.load()) readers_.push_back(std::move(db));
    }
    return out;
  } catch (const pg::Failure& f) {
    // A read transaction left open by the failure ends with the connection, when it is dropped,
    // or here.
    if (db->ok()) (void)db->exec("ROLLBACK");
    return Status(f.status().code(), what + ": " + f.status().message());
  }
}

namespace postgres {

// INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT (id) DO UPDATE: every column,
// or (`rewrite_states` false) all but the indexed state columns.
const std::string& upsert_twins_sql(bool rewrite_states);

}  // namespace postgres
}  // namespace doppel::storage
