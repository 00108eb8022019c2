// PostgresServer: a private PostgreSQL server for a test (sim::LocalPostgres in a temporary
// directory, fsync off), stopped and removed when the object goes. A test that needs it and
// cannot start it fails, saying why (it never skips). Test-only; needs Debian's postgresql-15
// (scripts/setup.sh installs it).
#pragma once

#include <doctest/doctest.h>

#include <optional>
#include <string>

#include "simulator/local_postgres.h"
#include "tests/support/temp_dir.h"

namespace doppel::testing {

class PostgresServer {
 public:
  // With a `password`, logins over TCP need it; the socket in the directory is trusted.
  explicit PostgresServer(std::string password = {})
      : server_(dir_.path().string(), sim::LocalPostgresOptions{std::move(password), false}) {
    start();
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  void start() {
    const Status s = server_.start();
    REQUIRE_MESSAGE(s, s.to_string());
  }
  void stop() { server_.stop(); }

  int port() const { return server_.port(); }
  // A libpq URI over TCP to database `db`, as `user` with `password` (none: the server's).
  std::string uri(const std::string& db, const std::string& user = "doppel",
                  std::optional<std::string> password = std::nullopt) const {
    return server_.uri(db, user, password ? &*password : nullptr);
  }
  // A new, empty database; its URI.
  std::string create_database() {
    auto uri = server_.create_database();
    REQUIRE_MESSAGE(uri, uri.status().to_string());
    return *uri;
  }

 private:
  TempDir dir_{"doppel-pg-"};
  sim::LocalPostgres server_;
};

// The run's private server, started on first use and stopped at exit.
inline PostgresServer& shared_postgres() {
  static PostgresServer server;
  return server;
}

}  // namespace doppel::testing
