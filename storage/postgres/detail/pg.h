// libpq, wrapped for the PostgreSQL backend (storage/postgres/): a connection and a statement's
// rows as RAII objects, and every failure as a Status that carries the SQLSTATE and says what to
// do about it (a wrong password, a missing database, an unreachable server, a full disk). libpq's
// own header stays in pg.cc.
//
// Durability: every connection runs with synchronous_commit = on, whatever the server's default,
// so a commit that returned has reached the server's disk (never `off`, which loses acknowledged
// writes when the server crashes).
//
// Thread-safety: a Connection is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "twins/status.h"

struct pg_conn;
struct pg_result;

namespace doppel::storage::pg {

// A failure as an exception, for code that runs several statements and gives up at the first
// that fails (the store's writer and pruner); `status` says what failed and what to do.
class Failure : public std::runtime_error {
 public:
  explicit Failure(Status status)
      : std::runtime_error(status.message()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// A PostgreSQL array literal ({...}), element by element: how the store sends a column of many
// rows as one parameter, for multi-row statements over unnest($1::text[], $2::bigint[], ...).
class ArrayLiteral {
 public:
  ArrayLiteral& text(std::string_view value);
  ArrayLiteral& bytes(std::string_view value);  // for a bytea[]
  ArrayLiteral& integer(int64_t value);
  ArrayLiteral& null();
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string str() const { return body_ + "}"; }
  void clear() {
    body_ = "{";
    size_ = 0;
  }

 private:
  void separate();
  std::string body_ = "{";
  size_t size_ = 0;
};

// A statement's parameters, in order ($1, $2, ...): text, bytes (sent as binary, for bytea) or
// NULL.
class Params {
 public:
  Params& text(std::string_view value);
  Params& bytes(std::string_view value);
  Params& integer(int64_t value);
  Params& null();
  Params& array(const ArrayLiteral& value) { return text(value.str()); }
  size_t size() const { return values_.size(); }

 private:
  friend class Connection;
  std::vector<std::optional<std::string>> values_;
  std::vector<int> binary_;
};

// The rows a statement returned, as text (bytea columns through bytes()).
class Rows {
 public:
  size_t size() const;
  bool is_null(size_t row, int column) const;
  std::string text(size_t row, int column) const;
  int64_t integer(size_t row, int column) const;
  std::string bytes(size_t row, int column) const;  // a bytea column, decoded
  // Rows changed by an INSERT, UPDATE or DELETE.
  uint64_t affected() const;

 private:
  friend class Connection;
  struct Free {
    void operator()(pg_result* r) const;
  };
  std::unique_ptr<pg_result, Free> result_;
};

class Connection {
 public:
  // Connects to `uri` (a libpq URI: postgresql://user[:password]@host:port/db). The failure says
  // which of the usual causes it is and what to do.
  static Result<Connection> open(const std::string& uri);

  // Runs one statement. kUnavailable when the connection is gone (the server stopped or the
  // network failed: reconnect), kInvalidArgument for a statement the server refuses, and
  // kUnavailable naming the SQLSTATE for the rest; the message says what to do.
  Result<Rows> exec(const std::string& sql, const Params& params = {});
  // The same for statements without parameters, possibly several separated by ';' (schema).
  Status exec_script(const std::string& sql);
  // exec() that throws Failure instead of returning it.
  Rows must(const std::string& sql, const Params& params = {});

  // Statements sent together in libpq's pipeline mode: all of them, then a sync, in one round
  // trip, and their results read in order. The first that fails throws Failure; the server skips
  // the rest (inside a transaction block, the transaction is then aborted: roll it back).
  struct Statement {
    std::string sql;
    Params params;
  };
  std::vector<Rows> pipeline(const std::vector<Statement>& statements);

  bool ok() const;  // still connected

  // From now on, a statement with parameters is prepared (a named statement) the first time it
  // runs and executed by name after, so that the server parses, analyses and plans it once per
  // connection rather than on every execution — for a connection that runs a fixed set of
  // statements many times (the store's writer: about a fifth of its backend's CPU went there).
  // At most `max` distinct statements are kept; past that the rest run unnamed, as before.
  void prepare_statements(size_t max);
  size_t prepared_statements() const;

  // LISTEN's side: waits up to `timeout_ms` for a notification on a channel this connection
  // listens to, and consumes every one that arrived. True if any did; kUnavailable when the
  // connection is gone.
  Result<bool> wait_notification(int timeout_ms);

 private:
  struct Free {
    void operator()(pg_conn* c) const;
  };
  explicit Connection(pg_conn* c) : conn_(c) {}
  // The name `sql` runs under: an existing prepared statement's; a new one's, which the caller
  // prepares first (`fresh`); or empty, unnamed (no parameters, or the cache is full or off).
  std::string name_for(const std::string& sql, const Params& params, bool& fresh);
  // After a failed result: forgets every prepared statement if the server has lost them.
  void forget_if_lost(const pg_result* r);
  std::unique_ptr<pg_conn, Free> conn_;
  struct Prepared;  // pg.cc
  struct FreePrepared {
    void operator()(Prepared* p) const;
  };
  std::unique_ptr<Prepared, FreePrepared> prepared_;  // none until prepare_statements()
};

// What a libpq error means for the operator, from its SQLSTATE (empty: a connection failure,
// classified by libpq's message) and message: the text of the Status a failure becomes.
std::string explain(std::string_view sqlstate, std::string_view message);

}  // namespace doppel::storage::pg
