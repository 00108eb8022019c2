// SqliteTwinStore (sqlite_store.h): opening and migrating, the port's write side, the checkpointer,
// and the shard's reads. The writer thread, the change feed and the fleet reads are in store_*.cc.
#include "storage/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "storage/sqlite/detail/connections.h"
#include "storage/sqlite/detail/query_sql.h"
#include "storage/sqlite/detail/schema.h"
#include "storage/sqlite/detail/sqlite.h"
#include "twins/log.h"
#include "twins/record.h"
#include "twins/thread_name.h"

namespace doppel::storage {

SqliteTwinStore::SqliteTwinStore(StoreOptions options, Metrics& metrics)
    : options_(std::move(options)),
      committer_(options_.max_queued, options_.commit_gather),
      commit_metrics_(metrics, committer_) {
  metrics.gauge_fn("doppel_store_sqlite_memory_bytes",
                   "Heap memory SQLite holds (page caches of all connections)",
                   [] { return static_cast<double>(sqlite3_memory_used()); });
}

Result<std::unique_ptr<SqliteTwinStore>> SqliteTwinStore::open(StoreOptions options,
                                                               Metrics& metrics) {
  std::unique_ptr<SqliteTwinStore> store(new SqliteTwinStore(std::move(options), metrics));
  try {
    const auto parent = std::filesystem::path(store->options_.path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    // Owner-only (it holds device credential hashes); SQLite gives its -wal and -shm files the
    // database file's permissions.
    const int fd = ::open(store->options_.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      (void)::fchmod(fd, 0600);
      ::close(fd);
    }
    store->writer_ = std::make_unique<Writer>(store->options_.path, store->options_.durability);
    Database& db = store->writer_->db;
    if (Status s = detail::migrate(db, store->options_.path); !s) return s;
    // Expression indexes asked for (--index): created once, then kept (also when no longer
    // asked for: dropping one is an operator's decision).
    for (const auto& name : store->options_.indexes) {
      auto field = twins::parse_query_field(name);
      if (!field)
        return Status(StatusCode::kInvalidArgument, "--index: " + field.status().message());
      const auto started = std::chrono::steady_clock::now();
      db.exec(detail::index_sql(*field).c_str());
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
              .count();
      log_info("store: index on " + name + " ready (" + std::to_string(static_cast<int64_t>(ms)) +
               " ms)");
    }
    store->schema_version_ = detail::schema_version();
    store->writer_->prepare();
    store->last_event_seq_.store(static_cast<uint64_t>(db.query_int(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)")));
  } catch (const std::exception& e) {
    return to_status(e, "opening the store");
  }
  store->thread_ = std::thread([s = store.get()] {
    name_this_thread("sqlite-writer");
    s->writer_loop();
  });
  store->checkpointer_ = std::thread([s = store.get()] {
    name_this_thread("sqlite-ckpt");
    s->checkpoint_loop();
  });
  return store;
}

SqliteTwinStore::~SqliteTwinStore() { close(); }

void SqliteTwinStore::close() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  committer_.close();  // the writer commits what is queued, then stops
  if (thread_.joinable()) thread_.join();
  checkpoint_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  closed_.store(true);
  std::lock_guard lock(readers_mu_);
  readers_.clear();
}

uint64_t SqliteTwinStore::write(twins::TwinWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

uint64_t SqliteTwinStore::write(twins::JobWrite write, twins::CommitCallback on_commit) {
  return committer_.enqueue(std::move(write), std::move(on_commit));
}

void SqliteTwinStore::discard(const std::string& id) { committer_.discard(id); }

void SqliteTwinStore::when_committed(uint64_t seq, twins::CommitCallback callback) {
  committer_.when_committed(seq, std::move(callback));
}

void SqliteTwinStore::flush() { committer_.flush(); }

void SqliteTwinStore::checkpoint_loop() {
  // A PASSIVE checkpoint copies what it can from the WAL into the database without blocking
  // the writer or readers; the writer restarts the WAL from the top once it is all copied.
  std::unique_ptr<Database> db;
  while (true) {
    {
      std::unique_lock lock(stop_mu_);
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
      if (stopping_) break;
    }
    try {
      if (!db) {
        db = std::make_unique<Database>(options_.path, SQLITE_OPEN_READWRITE);
        detail::configure(*db, options_.durability);
      }
      int wal_frames = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                               &wal_frames, &copied);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) db->fail(rc, "checkpoint");
    } catch (const std::exception& e) {
      log_warn(std::string("store: checkpoint failed, retrying: ") + e.what());
      db.reset();
    }
  }
}

std::unique_ptr<SqliteTwinStore::Reader> SqliteTwinStore::acquire_reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!readers_.empty()) {
      auto r = std::move(readers_.back());
      readers_.pop_back();
      return r;
    }
  }
  return std::make_unique<Reader>(options_.path, options_.durability);
}

void SqliteTwinStore::release_reader(std::unique_ptr<Reader> reader) {
  std::lock_guard lock(readers_mu_);
  if (!closed_.load()) readers_.push_back(std::move(reader));
}

Result<std::optional<twins::StoredTwin>> SqliteTwinStore::load(const std::string& id) {
  return with_reader([&] { return "loading twin '" + id + "'"; },
                     [&](Reader& reader) -> Result<std::optional<twins::StoredTwin>> {
                       std::optional<twins::StoredTwin> st;
                       {
                         Transaction tx(reader.db,
                                        false);  // one snapshot for the row and its commands
                         st = reader.load(id);
                         tx.commit();
                       }
                       return st;
                     });
}

Result<std::vector<twins::StoredTwin>> SqliteTwinStore::list(const std::string& after_id,
                                                             size_t limit) {
  return with_reader("listing twins",
                     [&](Reader& reader) -> Result<std::vector<twins::StoredTwin>> {
                       std::vector<twins::StoredTwin> out;
                       {
                         Transaction tx(reader.db, false);
                         std::vector<std::string> ids;
                         reader.list_twins.bind(1, after_id).bind(2, static_cast<int64_t>(limit));
                         while (reader.list_twins.step())
                           ids.push_back(reader.list_twins.column_text(0));
                         reader.list_twins.reset();
                         for (const auto& id : ids) {
                           if (auto st = reader.load(id)) out.push_back(std::move(*st));
                         }
                         tx.commit();
                       }
                       return out;
                     });
}

Result<std::vector<twins::DueTwin>> SqliteTwinStore::due(const twins::PartitionFilter& partitions,
                                                         twins::Millis after_due,
                                                         const std::string& after_id,
                                                         twins::Millis up_to, size_t limit) {
  std::string only;  // a JSON array of the partitions, for json_each
  if (partitions) {
    for (uint32_t p : *partitions) only += (only.empty() ? "[" : ",") + std::to_string(p);
    only += only.empty() ? "[]" : "]";
  }
  return with_reader(
      "scanning deadlines", [&](Reader& reader) -> Result<std::vector<twins::DueTwin>> {
        std::vector<twins::DueTwin> out;
        auto& q = reader.due_twins;
        q.bind(1, after_due).bind(2, after_id).bind(3, up_to).bind(4, static_cast<int64_t>(limit));
        if (partitions) {
          q.bind(5, std::string_view(only));
        } else {
          q.bind_null(5);
        }
        while (q.step()) out.push_back({q.column_text(0), q.column_int(1)});
        q.reset();
        return out;
      });
}

Result<uint64_t> SqliteTwinStore::count() {
  return with_reader("counting twins", [&](Reader& reader) -> Result<uint64_t> {
    auto& q = reader.count_twins;
    const uint64_t n = q.step() ? static_cast<uint64_t>(q.column_int(0)) : 0;
    q.reset();
    return n;
  });
}

Result<std::vector<std::pair<std::string, uint64_t>>> SqliteTwinStore::command_counts() {
  return with_reader("counting commands",
                     [&](Reader& reader) -> Result<std::vector<std::pair<std::string, uint64_t>>> {
                       std::vector<std::pair<std::string, uint64_t>> out;
                       auto& q = reader.count_commands;
                       while (q.step())
                         out.emplace_back(q.column_text(0), static_cast<uint64_t>(q.column_int(1)));
                       q.reset();
                       return out;
                     });
}

}  // namespace doppel::storage
