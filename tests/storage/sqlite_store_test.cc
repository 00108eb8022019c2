// The SQLite store on a real file, what is its own (DESIGN §8): its migrations, and refusing a file
// from a newer doppeld. What every store promises is in store_contract_test.cc, which runs over
// SQLite too.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <random>

#include "storage/sqlite/sqlite_store.h"
#include "tests/support/store_rows.h"
#include "tests/support/temp_dir.h"
#include "twins/fnv1a.h"
#include "twins/query.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::event;
using doppel::testing::row;
using doppel::testing::TempDir;
using doppel::testing::write_and_wait;
using storage::SqliteTwinStore;
using storage::StoreOptions;

namespace {

std::unique_ptr<SqliteTwinStore> open_store(const std::string& path, Metrics& m) {
  StoreOptions o;
  o.path = path;
  auto s = SqliteTwinStore::open(o, m);
  REQUIRE_MESSAGE(s, s.status().to_string());
  return std::move(*s);
}

}  // namespace

TEST_CASE("an empty file is migrated to the current schema") {
  TempDir dir("doppel-store-");
  Metrics m;
  auto store = open_store(dir.file("doppel.db"), m);
  const int store_schema_version = store->schema_version();
  CHECK(store_schema_version == 11);
  store->close();
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(dir.file("doppel.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(sqlite3_column_int(st, 0) == store_schema_version);
  sqlite3_finalize(st);
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_CASE(
    "files from before partitions and from 256 partitions are migrated: every twin gets its "
    "partition") {
  for (const int from : {7, 8}) {
    CAPTURE(from);
    TempDir dir("doppel-store-");
    {
      Metrics m;
      auto store = open_store(dir.file("doppel.db"), m);
      for (int i = 0; i < 50; ++i)
        write_and_wait(*store, row("m" + std::to_string(i), 1, 1000 + i));
      store->close();
    }
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(dir.file("doppel.db").c_str(), &db) == SQLITE_OK);
    // Neither had the dialect column (10) or the certificates (11).
    REQUIRE(sqlite3_exec(db,
                         "ALTER TABLE twins DROP COLUMN dialect; DROP TABLE device_certificates",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    if (from == 7) {  // no partition column
      REQUIRE(sqlite3_exec(db,
                           "ALTER TABLE twins DROP COLUMN partition_id; PRAGMA user_version = 7",
                           nullptr, nullptr, nullptr) == SQLITE_OK);
    } else {  // 256 partitions: each twin's as fnv1a32(id) % 256
      for (int i = 0; i < 50; ++i) {
        const std::string id = "m" + std::to_string(i);
        const std::string sql =
            "UPDATE twins SET partition_id = " + std::to_string(doppel::twins::fnv1a32(id) % 256) +
            " WHERE id = '" + id + "'";
        REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
      }
      REQUIRE(sqlite3_exec(db, "PRAGMA user_version = 8", nullptr, nullptr, nullptr) == SQLITE_OK);
    }
    sqlite3_close(db);

    Metrics m;
    auto store = open_store(dir.file("doppel.db"), m);
    CHECK(store->schema_version() == 11);
    for (const char* probe : {"m7", "m31"}) {
      const uint32_t p = partition_of(probe);
      auto due = store->due(std::vector<uint32_t>{p}, 0, "", 5000, 100);
      REQUIRE(due);
      size_t want = 0;
      for (int i = 0; i < 50; ++i) want += partition_of("m" + std::to_string(i)) == p ? 1 : 0;
      CHECK(due->size() == want);
      for (const auto& d : *due) CHECK(partition_of(d.id) == p);
    }
  }
}

TEST_CASE("a file from a newer doppeld is refused with a clear error") {
  TempDir dir("doppel-store-");
  sqlite3* db = nullptr;
  sqlite3_open(dir.file("doppel.db").c_str(), &db);
  sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  Metrics m;
  StoreOptions o;
  o.path = dir.file("doppel.db");
  auto s = SqliteTwinStore::open(o, m);
  REQUIRE(!s);
  CHECK(s.status().message().find("newer") != std::string::npos);
}
