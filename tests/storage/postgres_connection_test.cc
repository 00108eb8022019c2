// The PostgreSQL backend's connections (storage/postgres/detail/pg.h) against a real, private
// server: statements, bytes, synchronous commits whatever the database's default, and failures
// that say what to do — a wrong password, a missing database, a stopped server, a refused
// statement, a connection lost and a new one once the server is back.
#include <doctest/doctest.h>

#include <string>

#include "storage/postgres/detail/pg.h"
#include "tests/support/postgres_server.h"

using namespace doppel;
using doppel::storage::pg::Connection;
using doppel::storage::pg::Params;
using doppel::testing::PostgresServer;

namespace {

Connection connect(const std::string& uri) {
  auto c = Connection::open(uri);
  REQUIRE_MESSAGE(c, c.status().to_string());
  return std::move(*c);
}

std::string error_of(const std::string& uri) {
  auto c = Connection::open(uri);
  REQUIRE_FALSE(c);
  CHECK(c.status().code() == StatusCode::kUnavailable);
  return c.status().message();
}

}  // namespace

TEST_CASE("statements, parameters and bytes round trip") {
  PostgresServer server;
  Connection c = connect(server.create_database());
  REQUIRE(c.exec_script("CREATE TABLE t (id text PRIMARY KEY, n bigint, b bytea, x text)"));
  const std::string bytes("\x00\x01\xff\x90", 4);
  auto put = c.exec("INSERT INTO t VALUES ($1, $2, $3, $4)",
                    Params().text("a").integer(-42).bytes(bytes).null());
  REQUIRE_MESSAGE(put, put.status().to_string());
  CHECK(put->affected() == 1);
  auto rows = c.exec("SELECT id, n, b, x FROM t WHERE id = $1", Params().text("a"));
  REQUIRE(rows);
  REQUIRE(rows->size() == 1);
  CHECK(rows->text(0, 0) == "a");
  CHECK(rows->integer(0, 1) == -42);
  CHECK(rows->bytes(0, 2) == bytes);
  CHECK(rows->is_null(0, 3));
  CHECK_FALSE(rows->is_null(0, 0));
}

TEST_CASE("prepared statements: run by name after their first use, bounded, failures forgotten") {
  PostgresServer server;
  Connection c = connect(server.create_database());
  REQUIRE(c.exec_script("CREATE TABLE t (id bigint PRIMARY KEY, x text)"));
  c.prepare_statements(2);
  // What the server holds for this connection, by its own catalogue.
  auto held = [&c] {
    auto rows = c.exec("SELECT count(*) FROM pg_prepared_statements");  // no parameters: unnamed
    REQUIRE(rows);
    return rows->integer(0, 0);
  };
  const std::string insert = "INSERT INTO t VALUES ($1, $2)";
  const std::string select = "SELECT x FROM t WHERE id = $1";
  // Prepared in a pipeline, then the same text twice more in it, by its name.
  auto out = c.pipeline({{"BEGIN", {}},
                         {insert, Params().integer(1).text("one")},
                         {insert, Params().integer(2).text("two")},
                         {select, Params().integer(2)},
                         {"COMMIT", {}}});
  REQUIRE(out.size() == 5);
  CHECK(out[1].affected() == 1);
  CHECK(out[2].affected() == 1);
  REQUIRE(out[3].size() == 1);
  CHECK(out[3].text(0, 0) == "two");
  CHECK(c.prepared_statements() == 2);
  CHECK(held() == 2);
  // Run again by name, outside a pipeline too, with new values.
  auto again = c.exec(select, Params().integer(1));
  REQUIRE(again);
  CHECK(again->text(0, 0) == "one");
  // The cache is full: a third statement runs unnamed, and still runs.
  auto third = c.exec("SELECT id FROM t WHERE x = $1", Params().text("two"));
  REQUIRE(third);
  CHECK(third->integer(0, 0) == 2);
  CHECK(held() == 2);

  // Should the server lose them (DEALLOCATE ALL, a pooler's other connection), the next use of
  // one fails once, and the one after prepares it again.
  REQUIRE(c.exec_script("DEALLOCATE ALL"));
  CHECK(held() == 0);
  CHECK_FALSE(c.exec(select, Params().integer(1)));
  CHECK(c.prepared_statements() == 0);
  auto healed = c.exec(select, Params().integer(1));
  REQUIRE(healed);
  CHECK(healed->text(0, 0) == "one");
  CHECK(held() == 1);

  // A statement the server refuses to prepare is not remembered, in a pipeline or not.
  Connection d = connect(server.create_database());
  d.prepare_statements(8);
  CHECK_THROWS_AS(
      d.pipeline({{"SELECT nosuchcolumn FROM pg_class WHERE oid = $1", Params().integer(1)}}),
      storage::pg::Failure);
  CHECK_FALSE(d.exec("SELECT nosuchcolumn FROM pg_class WHERE oid = $1", Params().integer(1)));
  CHECK(d.prepared_statements() == 0);
  auto fine = d.exec("SELECT $1::bigint + 1", Params().integer(41));
  REQUIRE(fine);
  CHECK(fine->integer(0, 0) == 42);
  CHECK(d.prepared_statements() == 1);
}

TEST_CASE("every connection commits synchronously, whatever the database's default") {
  PostgresServer server;
  const std::string uri = server.create_database();
  const std::string db = uri.substr(uri.rfind('/') + 1);
  REQUIRE(connect(uri).exec_script("ALTER DATABASE " + db + " SET synchronous_commit = off"));
  auto setting = connect(uri).exec("SHOW synchronous_commit");
  REQUIRE(setting);
  CHECK(setting->text(0, 0) == "on");
}

TEST_CASE("a wrong password and a missing database say what to fix") {
  PostgresServer server("s3cret");
  CHECK(Connection::open(server.uri("postgres")));  // the right one
  const std::string wrong = error_of(server.uri("postgres", "doppel", "guess"));
  CHECK(wrong.find("refused the login") != std::string::npos);
  CHECK(wrong.find("password in the --store URI") != std::string::npos);
  const std::string missing = error_of(server.uri("nosuchdb"));
  CHECK(missing.find("does not exist") != std::string::npos);
  CHECK(missing.find("createdb") != std::string::npos);
}

TEST_CASE("a refused statement is the caller's error and names its SQLSTATE") {
  PostgresServer server;
  Connection c = connect(server.create_database());
  auto bad = c.exec("SELEC 1");
  REQUIRE_FALSE(bad);
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("SQLSTATE 42601") != std::string::npos);
  auto missing = c.exec("SELECT * FROM nowhere");
  REQUIRE_FALSE(missing);
  CHECK(missing.status().message().find("SQLSTATE 42P01") != std::string::npos);
  CHECK(c.exec("SELECT 1"));  // the connection is still good
}

TEST_CASE("a stopped server: a lost connection, a clear refusal, and a new connection after") {
  PostgresServer server;
  const std::string uri = server.create_database();
  Connection c = connect(uri);
  REQUIRE(c.exec("SELECT 1"));
  server.stop();
  auto lost = c.exec("SELECT 1");
  REQUIRE_FALSE(lost);
  CHECK(lost.status().code() == StatusCode::kUnavailable);
  CHECK_FALSE(c.ok());
  const std::string down = error_of(uri);
  CHECK(down.find("cannot reach the PostgreSQL server") != std::string::npos);
  server.start();
  CHECK(connect(uri).exec("SELECT 1"));
}
