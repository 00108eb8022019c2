// Thin RAII wrappers over the SQLite C API, for storage/ only. Failures throw SqliteError, which
// the store catches at its public boundary and turns into a Status.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "twins/status.h"

namespace doppel::storage::detail {

class SqliteError : public std::runtime_error {
 public:
  SqliteError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

class Database {
 public:
  Database(const std::string& path, int flags);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  sqlite3* get() const { return db_; }
  void exec(const char* sql);
  int64_t query_int(const char* sql);
  [[noreturn]] void fail(int code, std::string_view context) const;

 private:
  sqlite3* db_ = nullptr;
};

class Statement {
 public:
  Statement(const Database& db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, std::string_view text);
  Statement& bind_blob(int index, std::string_view bytes);
  Statement& bind(int index, std::optional<int64_t> value);
  Statement& bind_double(int index, double value);
  Statement& bind_null(int index);
  // True while a row is available; false when done.
  bool step();
  // Runs a statement that returns no rows, then resets it.
  void run();
  void reset();

  int64_t column_int(int i) const { return sqlite3_column_int64(stmt_, i); }
  bool column_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
  int column_type(int i) const { return sqlite3_column_type(stmt_, i); }
  double column_double(int i) const { return sqlite3_column_double(stmt_, i); }
  std::string column_text(int i) const;

 private:
  const Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// While it lives, statements on `db` stop with SQLITE_INTERRUPT (a SqliteError) once `deadline`
// has passed: a read's time budget. A deadline of time_point::max() installs nothing.
class ReadDeadline {
 public:
  ReadDeadline(const Database& db, std::chrono::steady_clock::time_point deadline);
  ~ReadDeadline();
  ReadDeadline(const ReadDeadline&) = delete;
  ReadDeadline& operator=(const ReadDeadline&) = delete;

 private:
  static int check(void* self);
  const Database& db_;
  std::chrono::steady_clock::time_point deadline_;
};

// Runs BEGIN (or BEGIN IMMEDIATE) and rolls back on destruction unless committed.
class Transaction {
 public:
  Transaction(Database& db, bool immediate);
  ~Transaction();
  void commit();

 private:
  Database& db_;
  bool open_ = true;
};

// A failure as a Status. SQLite's own words (which carry the statement's SQL) go to the log; the
// Status, which an API answer may show, says what failed and SQLite's error class. A read stopped
// at its deadline (SQLITE_INTERRUPT from ReadDeadline) is kTimeout.
Status to_status(const std::exception& e, std::string_view what);

}  // namespace doppel::storage::detail
