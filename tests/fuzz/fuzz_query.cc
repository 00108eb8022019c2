// libFuzzer: the fleet query parser. Never crashes or recurses without bound; an error is
// kInvalidArgument and names a column within the text (or just past its end); a cursor that
// parses is rebuilt exactly; and every query it accepts prepares and runs on the store, in every
// statement the store builds from one (a query SQLite could not prepare failed the writer's whole
// batch once: it must be refused at parse time instead), and finds on a small fleet of mixed types
// exactly the twins the reference evaluator (twins/query_eval.h) says match.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "storage/sqlite/sqlite_store.h"
#include "tests/support/query_prepares.h"
#include "tests/support/temp_dir.h"
#include "twins/partition.h"
#include "twins/query.h"
#include "twins/query_eval.h"

using namespace doppel;

namespace {

// The fleet the oracle runs over: every value family, missing fields, nesting, fixed columns.
const std::vector<twins::TwinRecord>& fleet() {
  static const auto* records = [] {
    auto* out = new std::vector<twins::TwinRecord>();
    const char* const reported[] = {
        R"({"x":1,"y":"a"})",    R"({"x":1.5,"y":"ab%"})",     R"({"x":"1","y":true})",
        R"({"x":true})",         R"({"x":false,"z":{"w":2}})", R"({"x":null,"y":""})",
        R"({"x":{"y":1}})",      R"({"x":[1],"y":"B"})",       R"({})",
        R"({"x":-2,"y":"a_b"})",
    };
    int i = 0;
    for (const char* r : reported) {
      twins::TwinRecord t;
      t.id = "f-" + std::to_string(i);
      t.version = static_cast<uint64_t>(i + 1);
      t.reported = r;
      t.desired = i % 2 == 0 ? R"({"x":1})" : R"({"x":"1"})";
      t.tags = i % 3 == 0 ? R"({"site":"berlin"})" : "{}";
      t.created_at = 1000 * i;
      t.updated_at = 1000 * i + 5;
      t.liveness = i % 2 == 0 ? "fresh" : "stale";
      if (i % 3 != 0) t.last_seen = 500 * i;
      t.connection = "online";
      t.reconcile = "in_sync";
      t.reconcile_attempts = static_cast<uint32_t>(i % 3);
      t.encoding = "json";
      out->push_back(std::move(t));
      ++i;
    }
    return out;
  }();
  return *records;
}

// One store for the whole run (reachable from a global: not a leak), holding fleet().
storage::SqliteTwinStore& store() {
  static testing::TempDir* dir = [] {
    auto* d = new testing::TempDir("doppel-fuzz-query-");
    // libFuzzer ends the run with exit(): the store is never closed, so its directory goes here
    // (one was left in /tmp per run before).
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir->path(), ec);
    });
    return d;
  }();
  static Metrics* metrics = new Metrics();
  static storage::SqliteTwinStore* s = [] {
    storage::StoreOptions o;
    o.path = dir->file("fuzz.db");
    auto opened = storage::SqliteTwinStore::open(o, *metrics);
    if (!opened) {
      std::fprintf(stderr, "fuzz_query: %s\n", opened.status().to_string().c_str());
      std::abort();
    }
    for (const auto& r : fleet()) {
      twins::TwinWrite w;
      w.id = r.id;
      w.partition = twins::partition_of(r.id);
      w.epoch = (*opened)->epoch(w.partition);
      w.twin = r;
      (*opened)->write(std::move(w), nullptr);
    }
    (*opened)->flush();
    return opened->release();
  }();
  return *s;
}

// Whether the store finds exactly the twins of fleet() that the evaluator says match.
bool agrees_with_oracle(const twins::QueryExpr& where) {
  twins::TwinQuery q;
  q.where = &where;
  q.limit = 100;
  auto page = store().query(q);
  if (!page) return false;
  std::set<std::string> found;
  for (const auto& t : page->first) found.insert(t.twin.id);
  std::set<std::string> expected;
  for (const auto& r : fleet()) {
    if (twins::matches(where, r)) expected.insert(r.id);
  }
  return found == expected;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto q = twins::parse_query(text);
  if (!q) {
    if (q.status().code() != StatusCode::kInvalidArgument) std::abort();
    const std::string m = q.status().message();
    const size_t at = m.find("column ");
    if (size <= twins::kMaxQueryBytes) {
      if (at == std::string::npos) std::abort();
      const unsigned long column = std::strtoul(m.c_str() + at + 7, nullptr, 10);
      if (column < 1 || column > size + 1) std::abort();
    }
  }
  if (q) {
    if (Status s = testing::prepares_everywhere(store(), **q); !s) {
      std::fprintf(stderr, "accepted but does not run: %s\n", s.to_string().c_str());
      std::abort();
    }
    if (!agrees_with_oracle(**q)) {
      std::fprintf(stderr, "the store and the reference evaluator differ\n");
      std::abort();
    }
  }
  (void)twins::parse_query_order(text);
  if (auto c = twins::parse_cursor(text)) {
    if (twins::cursor_text(*c) != text) std::abort();
  }
  return 0;
}
