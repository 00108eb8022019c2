#include "storage/sqlite/detail/sqlite.h"

#include "twins/log.h"

namespace doppel::storage::detail {

Database::Database(const std::string& path, int flags) {
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw SqliteError(rc, "cannot open " + path + ": " + msg);
  }
  sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() { sqlite3_close_v2(db_); }

void Database::exec(const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw SqliteError(rc, std::string(sql).substr(0, 80) + ": " + msg);
  }
}

int64_t Database::query_int(const char* sql) {
  Statement st(*this, sql);
  return st.step() ? st.column_int(0) : 0;
}

void Database::fail(int code, std::string_view context) const {
  throw SqliteError(code, std::string(context) + ": " + sqlite3_errmsg(db_));
}

ReadDeadline::ReadDeadline(const Database& db, std::chrono::steady_clock::time_point deadline)
    : db_(db), deadline_(deadline) {
  // Every thousand virtual-machine steps: a clock read costs far less than they do.
  if (deadline_ != std::chrono::steady_clock::time_point::max()) {
    sqlite3_progress_handler(db_.get(), 1000, &ReadDeadline::check, this);
  }
}

ReadDeadline::~ReadDeadline() { sqlite3_progress_handler(db_.get(), 0, nullptr, nullptr); }

int ReadDeadline::check(void* self) {
  return std::chrono::steady_clock::now() >= static_cast<ReadDeadline*>(self)->deadline_ ? 1 : 0;
}

Statement::Statement(const Database& db, const char* sql) : db_(db) {
  const int rc = sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, std::string("prepare '") + sql + "'");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_double(int index, double value) {
  const int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  const int rc =
      sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  const int rc = sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()),
                                   SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::optional<int64_t> value) {
  if (value) return bind(index, *value);
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(stmt_);
  db_.fail(rc, "step");
}

void Statement::run() {
  step();
  reset();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::string Statement::column_text(int i) const {
  const void* p = sqlite3_column_blob(stmt_, i);
  const int n = sqlite3_column_bytes(stmt_, i);
  return p != nullptr ? std::string(static_cast<const char*>(p), static_cast<size_t>(n))
                      : std::string();
}

Transaction::Transaction(Database& db, bool immediate) : db_(db) {
  db_.exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
}

Transaction::~Transaction() {
  if (open_) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  db_.exec("COMMIT");
  open_ = false;
}

Status to_status(const std::exception& e, std::string_view what) {
  if (const auto* sqlite = dynamic_cast<const SqliteError*>(&e)) {
    if (sqlite->code() == SQLITE_INTERRUPT) {
      return Status(StatusCode::kTimeout, std::string(what) + ": stopped at its deadline");
    }
    log_warn("store: " + std::string(what) + ": " + e.what());
    return Status(StatusCode::kUnavailable,
                  std::string(what) + " failed: " + sqlite3_errstr(sqlite->code() & 0xff) +
                      " (the details are in doppeld's log)");
  }
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + e.what());
}

}  // namespace doppel::storage::detail
