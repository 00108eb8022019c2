#include "simulator/bench/baseline.h"

#include <sqlite3.h>

#include <chrono>

#include "mqtt/client.h"
#include "twins/merge_patch.h"

namespace doppel::bench {
namespace {

using twins::json;

sqlite3_stmt* prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  return st;
}

}  // namespace

BaselineGateway::BaselineGateway(std::string broker, std::string db_path)
    : broker_(std::move(broker)), db_path_(std::move(db_path)) {}

BaselineGateway::~BaselineGateway() { stop(); }

Status BaselineGateway::start() {
  if (sqlite3_open(db_path_.c_str(), &db_) != SQLITE_OK) {
    return Status(StatusCode::kUnavailable, "cannot open " + db_path_);
  }
  sqlite3_exec(db_,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
               "CREATE TABLE IF NOT EXISTS twins (id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
               " reported TEXT NOT NULL, updated_at INTEGER NOT NULL)",
               nullptr, nullptr, nullptr);
  begin_ = prepare(db_, "BEGIN IMMEDIATE");
  select_ = prepare(db_, "SELECT version, reported FROM twins WHERE id = ?1");
  upsert_ = prepare(db_,
                    "INSERT INTO twins (id, version, reported, updated_at) VALUES (?1, ?2, ?3, ?4) "
                    "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                    "reported = excluded.reported, updated_at = excluded.updated_at");
  commit_ = prepare(db_, "COMMIT");
  if (begin_ == nullptr || select_ == nullptr || upsert_ == nullptr || commit_ == nullptr) {
    return Status(StatusCode::kInternal, sqlite3_errmsg(db_));
  }
  mqtt::ClientOptions o;
  o.uri = broker_;
  o.client_id = "baseline-gateway";
  o.max_inflight = 65535;
  client_ = std::make_unique<mqtt::Client>(o);
  // The handler runs on the MQTT client's thread, one message at a time, as a simple
  // stateless service would.
  client_->on_message([this](mqtt::IncomingMessage&& m) { handle(m.topic, m.payload); });
  if (Status s = client_->connect(std::chrono::seconds(10)); !s) return s;
  return client_->subscribe({"twins/+/reported"}, 1);
}

void BaselineGateway::stop() {
  if (client_) (void)client_->disconnect(std::chrono::milliseconds(1000));
  client_.reset();
  for (sqlite3_stmt* st : {begin_, select_, upsert_, commit_}) sqlite3_finalize(st);
  begin_ = select_ = upsert_ = commit_ = nullptr;
  sqlite3_close(db_);
  db_ = nullptr;
}

void BaselineGateway::handle(const std::string& topic, const std::string& payload) {
  const size_t a = topic.find('/');
  const size_t b = topic.find('/', a + 1);
  const std::string id = topic.substr(a + 1, b - a - 1);
  json patch = json::parse(payload, nullptr, false);
  if (patch.is_discarded() || !patch.contains("state") || !patch["state"].is_object()) {
    failed_.fetch_add(1);
    return;
  }
  sqlite3_step(begin_);
  sqlite3_reset(begin_);
  int64_t version = 0;
  json reported = json::object();
  sqlite3_bind_text(select_, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  if (sqlite3_step(select_) == SQLITE_ROW) {
    version = sqlite3_column_int64(select_, 0);
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(select_, 1));
    reported = json::parse(text, nullptr, false);
  }
  sqlite3_reset(select_);
  if (twins::apply_merge_patch(reported, patch["state"])) ++version;
  const std::string text = reported.dump();
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  sqlite3_bind_text(upsert_, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  sqlite3_bind_int64(upsert_, 2, version);
  sqlite3_bind_text(upsert_, 3, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  sqlite3_bind_int64(upsert_, 4, now);
  const int rc = sqlite3_step(upsert_);
  sqlite3_reset(upsert_);
  const int rc2 = sqlite3_step(commit_);
  sqlite3_reset(commit_);
  if (rc == SQLITE_DONE && rc2 == SQLITE_DONE) {
    processed_.fetch_add(1);
  } else {
    failed_.fetch_add(1);
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

}  // namespace doppel::bench
