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

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twins/status.h"

struct pg_conn;
struct pg_result;

namespace doppel::storage::pg {

// A statement's parameters, in order ($1, $2, ...): text, bytes (sent as binary, for bytea) or
// NULL.
class Params {
 public:
  Params& text(std::string_view value);
  Params& bytes(std::string_view value);
  Params& integer(int64_t value);
  Params& null();
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

  bool ok() const;  // still connected

 private:
  struct Free {
    void operator()(pg_conn* c) const;
  };
  explicit Connection(pg_conn* c) : conn_(c) {}
  std::unique_ptr<pg_conn, Free> conn_;
};

// What a libpq error means for the operator, from its SQLSTATE (empty: a connection failure,
// classified by libpq's message) and message: the text of the Status a failure becomes.
std::string explain(std::string_view sqlstate, std::string_view message);

}  // namespace doppel::storage::pg
