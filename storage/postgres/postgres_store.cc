// PostgresTwinStore (postgres_store.h): opening and migrating, the port's write side, reconnecting,
// and the shard's reads. The writer thread is in store_writer.cc, the change feed in
// store_events.cc.
#include "storage/postgres/postgres_store.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <utility>

#include "storage/postgres/detail/connections.h"
#include "storage/postgres/detail/pg.h"
#include "storage/postgres/detail/query_sql.h"
#include "storage/postgres/detail/schema.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::storage {
namespace {

// Who claims: this host and process, as doppel_partitions.owner shows it to an operator.
std::string owner_name() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  return std::string(host.data()) + ":" + std::to_string(getpid());
}

// Takes every partition at a new epoch (twins/partition.h): writes made under an older one —
// by a doppeld already running on this database — are fenced from this commit on.
Result<std::array<uint64_t, twins::kPartitions>> claim_partitions(pg::Connection& db) {
  try {
    if (Status s = db.exec_script(postgres::kBeginLocked); !s) throw pg::Failure(s);
    pg::Rows rows = db.must(
        "UPDATE doppel_partitions SET epoch = epoch + 1, owner = $1, claimed_at = now(), "
        "expires_at = NULL "
        "RETURNING partition_id, epoch, owner",
        pg::Params().text(owner_name()));
    db.must("COMMIT");
    std::array<uint64_t, twins::kPartitions> epochs{};
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto p = static_cast<size_t>(rows.integer(r, 0));
      if (p < epochs.size()) epochs[p] = static_cast<uint64_t>(rows.integer(r, 1));
    }
    if (rows.size() != twins::kPartitions) {
      return Status(StatusCode::kInternal, "doppel_partitions has " + std::to_string(rows.size()) +
                                               " rows, not " + std::to_string(twins::kPartitions));
    }
    return epochs;
  } catch (const pg::Failure& f) {
    (void)db.exec("ROLLBACK");
    return Status(f.status().code(), "claiming the partitions: " + f.status().message());
  }
}

}  // namespace

PostgresTwinStore::PostgresTwinStore(PostgresOptions options, Metrics& metrics)
    : options_(std::move(options)),
      committer_(options_.max_queued, options_.commit_gather),
      writer_(std::make_unique<Writer>()),
      commit_metrics_(metrics, committer_),
      reconnects_(&metrics.counter("doppel_store_reconnects_total",
                                   "Times the store's writer connected again to PostgreSQL")),
      fenced_writes_(&metrics.counter(
          "doppel_fenced_writes_total",
          "Twin writes refused because their partition's ownership epoch was no longer current "
          "(another node took the partition since the twin was loaded)")) {
  metrics.gauge_fn("doppel_store_available",
                   "1 while the store's writer is connected to its database, else 0",
                   [this] { return available_.load() ? 1.0 : 0.0; });
}

Result<std::unique_ptr<PostgresTwinStore>> PostgresTwinStore::open(PostgresOptions options,
                                                                   Metrics& metrics) {
  std::unique_ptr<PostgresTwinStore> store(new PostgresTwinStore(std::move(options), metrics));
  auto db = pg::Connection::open(store->options_.uri);
  if (!db) return db.status();
  if (Status s = postgres::migrate(*db); !s) return s;
  // Expression indexes asked for (--index): created once, then kept (also when no longer asked
  // for: dropping one is an operator's decision).
  for (const auto& name : store->options_.indexes) {
    auto field = twins::parse_query_field(name);
    if (!field) return Status(StatusCode::kInvalidArgument, "--index: " + field.status().message());
    const auto started = std::chrono::steady_clock::now();
    for (const auto& ddl : postgres::index_sql(*field)) {
      if (Status s = db->exec_script(ddl); !s) return s;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    log_info("store: index on " + name + " ready (" + std::to_string(ms) + " ms)");
  }
  if (!store->options_.cluster) {
    auto epochs = claim_partitions(*db);
    if (!epochs) return epochs.status();
    for (size_t p = 0; p < epochs->size(); ++p) store->epochs_[p].store((*epochs)[p]);
  }
  auto last = db->exec("SELECT value FROM event_stats WHERE name = 'last_seq'");
  if (!last) return last.status();
  store->last_event_seq_.store(static_cast<uint64_t>(last->integer(0, 0)));
  // After the migration and the indexes, which may take longer than a writer's statement.
  if (Status s = store->writer_session(*db); !s) return s;
  store->writer_->db = std::make_unique<pg::Connection>(std::move(*db));
  store->available_.store(true);
  store->thread_ = std::thread([s = store.get()] {
    name_this_thread("pg-writer");
    s->writer_loop();
  });
  if (store->options_.cluster)
    store->listener_ = std::thread([s = store.get()] {
      name_this_thread("pg-listen");
      s->listen_loop();
    });
  return store;
}

PostgresTwinStore::~PostgresTwinStore() { close(); }

void PostgresTwinStore::listen_loop() {
  std::unique_ptr<pg::Connection> db;
  uint64_t delivered = last_event_seq_.load();
  while (!listen_stop_.load()) {
    if (!db || !db->ok()) {
      db.reset();
      auto opened = pg::Connection::open(options_.uri);
      if (opened && opened->exec_script("LISTEN doppel_events")) {
        db = std::make_unique<pg::Connection>(std::move(*opened));
      } else {
        for (int i = 0; i < 10 && !listen_stop_.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
    }
    if (auto woke = db->wait_notification(250); !woke) {
      db.reset();
      continue;
    }
    // What is new, notified or not: a notification sent while this connection was away is not
    // sent again, so every round reads past what it has delivered (one indexed probe when idle).
    while (!listen_stop_.load()) {
      twins::EventQuery q;
      q.after_seq = delivered;
      q.limit = 1000;
      auto page = events(q);
      if (!page) break;
      if (!page->events.empty()) {
        uint64_t newest = page->events.back().seq;
        for (uint64_t seen = last_event_seq_.load(); newest > seen;) {
          if (last_event_seq_.compare_exchange_weak(seen, newest)) break;
        }
        if (events_listener_) events_listener_(last_event_seq_.load(), page->events);
      }
      delivered = std::max(delivered, page->scanned_to);
      if (page->events.size() < q.limit) break;
    }
  }
}

void PostgresTwinStore::close() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  committer_.close();  // the writer commits what is queued, then stops
  if (thread_.joinable()) thread_.join();
  listen_stop_.store(true);
  if (listener_.joinable()) listener_.join();
  closed_.store(true);
  std::lock_guard lock(readers_mu_);
  readers_.clear();
}

uint64_t PostgresTwinStore::write(twins::TwinWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

uint64_t PostgresTwinStore::write(twins::JobWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

void PostgresTwinStore::discard(const std::string& id) { committer_.discard(id); }

void PostgresTwinStore::when_committed(uint64_t seq, twins::CommitCallback callback) {
  committer_.when_committed(seq, std::move(callback));
}

void PostgresTwinStore::flush() { committer_.flush(); }

Status PostgresTwinStore::writer_session(pg::Connection& db) const {
  // The writer runs the same few dozen statements for ever (pg.h, prepare_statements), each
  // over arrays of rows or by key: one generic plan each, never planned again per execution (by
  // default the server plans the first five executions of each anew, and keeps doing so when a
  // generic plan's estimate looks costlier — as it does for unnest over arrays of unknown length).
  db.prepare_statements(64);
  std::string session = "SET plan_cache_mode = force_generic_plan";
  if (options_.writer_timeout.count() > 0) {
    const std::string ms = std::to_string(options_.writer_timeout.count());
    session +=
        "; SET statement_timeout = " + ms + "; SET idle_in_transaction_session_timeout = " + ms;
  }
  return db.exec_script(session);
}

void PostgresTwinStore::connect_writer() {
  Writer& w = *writer_;
  w.waiting = false;
  if (w.db && w.db->ok()) return;
  available_.store(false);
  w.db.reset();
  const auto now = std::chrono::steady_clock::now();
  if (now < w.retry_at) {
    w.waiting = true;
    throw pg::Failure(Status(StatusCode::kUnavailable,
                             "the PostgreSQL store is reconnecting to its server; retry shortly"));
  }
  auto db = pg::Connection::open(options_.uri);
  if (db) {
    if (Status s = writer_session(*db); !s) db = s;
  }
  if (db) {
    // A commit whose answer was lost may have applied: the seqs go on after what is stored.
    auto last = db->exec("SELECT value FROM event_stats WHERE name = 'last_seq'");
    if (last) {
      last_event_seq_.store(static_cast<uint64_t>(last->integer(0, 0)));
      w.db = std::make_unique<pg::Connection>(std::move(*db));
      w.backoff = std::chrono::milliseconds(100);
      available_.store(true);
      reconnects_->inc();
      log_info("store: connected to PostgreSQL again; writes go on");
      return;
    }
    db = last.status();
  }
  w.retry_at = now + w.backoff;
  log_warn("store: " + db.status().to_string() + "; retrying in " +
           std::to_string(w.backoff.count()) + " ms");
  w.backoff = std::min(w.backoff * 2, std::chrono::milliseconds(5000));
  throw pg::Failure(db.status());
}

Result<std::optional<twins::StoredTwin>> PostgresTwinStore::load(const std::string& id) {
  return with_reader(
      "loading twin '" + id + "'",
      [&](pg::Connection& db) -> Result<std::optional<twins::StoredTwin>> {
        // One statement, one snapshot: the row and its commands as of the same commit.
        pg::Rows rows = db.must(
            "SELECT t.version, t.desired, t.reported, t.desired_meta, t.reported_meta, t.body, "
            "t.next_deadline, t.updated_at, c.seq, c.id, c.status, c.body FROM twins t "
            "LEFT JOIN commands c ON c.twin_id = t.id WHERE t.id = $1 ORDER BY c.seq",
            pg::Params().text(id));
        if (rows.size() == 0) return std::optional<twins::StoredTwin>();
        twins::StoredTwin st;
        st.twin.id = id;
        st.twin.version = static_cast<uint64_t>(rows.integer(0, 0));
        st.twin.desired = rows.text(0, 1);
        st.twin.reported = rows.text(0, 2);
        st.twin.desired_meta = rows.bytes(0, 3);
        st.twin.reported_meta = rows.bytes(0, 4);
        st.twin.body = rows.bytes(0, 5);
        if (!rows.is_null(0, 6)) st.twin.next_deadline = rows.integer(0, 6);
        st.twin.updated_at = rows.integer(0, 7);
        for (size_t r = 0; r < rows.size(); ++r) {
          if (rows.is_null(r, 8)) continue;
          st.commands.push_back({static_cast<uint64_t>(rows.integer(r, 8)), rows.text(r, 9),
                                 rows.text(r, 10), rows.bytes(r, 11)});
        }
        return std::optional<twins::StoredTwin>(std::move(st));
      });
}

Result<std::vector<twins::DueTwin>> PostgresTwinStore::due(const twins::PartitionFilter& partitions,
                                                           twins::Millis after_due,
                                                           const std::string& after_id,
                                                           twins::Millis up_to, size_t limit) {
  pg::Params params = pg::Params().integer(after_due).text(after_id).integer(up_to).integer(
      static_cast<int64_t>(limit));
  if (partitions) {
    pg::ArrayLiteral only;
    for (uint32_t p : *partitions) only.integer(p);
    params.array(only);
  } else {
    params.null();
  }
  return with_reader("scanning deadlines",
                     [&](pg::Connection& db) -> Result<std::vector<twins::DueTwin>> {
                       pg::Rows rows = db.must(
                           "SELECT id, next_deadline FROM twins WHERE next_deadline IS NOT NULL "
                           "AND (next_deadline, id) > ($1, $2) AND next_deadline <= $3 "
                           "AND ($5::bigint[] IS NULL OR partition_id = ANY($5::bigint[])) "
                           "ORDER BY next_deadline, id LIMIT $4",
                           params);
                       std::vector<twins::DueTwin> out;
                       for (size_t r = 0; r < rows.size(); ++r) {
                         out.push_back({rows.text(r, 0), rows.integer(r, 1)});
                       }
                       return out;
                     });
}

Result<uint64_t> PostgresTwinStore::count() {
  return with_reader("counting twins", [&](pg::Connection& db) -> Result<uint64_t> {
    return static_cast<uint64_t>(db.must("SELECT count(*) FROM twins").integer(0, 0));
  });
}

Result<std::vector<std::pair<std::string, uint64_t>>> PostgresTwinStore::command_counts() {
  return with_reader(
      "counting commands",
      [&](pg::Connection& db) -> Result<std::vector<std::pair<std::string, uint64_t>>> {
        pg::Rows rows = db.must("SELECT status, count(*) FROM commands GROUP BY status");
        std::vector<std::pair<std::string, uint64_t>> out;
        for (size_t r = 0; r < rows.size(); ++r) {
          out.emplace_back(rows.text(r, 0), static_cast<uint64_t>(rows.integer(r, 1)));
        }
        return out;
      });
}

}  // namespace doppel::storage
