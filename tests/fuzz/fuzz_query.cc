// libFuzzer: the fleet query parser. Never crashes or recurses without bound; an error is
// kInvalidArgument and names a column within the text (or just past its end); a cursor that
// parses is rebuilt exactly; and every query it accepts prepares and runs on the store, in every
// statement the store builds from one (a query SQLite could not prepare failed the writer's whole
// batch once: it must be refused at parse time instead).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "storage/sqlite_store.h"
#include "tests/support/query_prepares.h"
#include "tests/support/temp_dir.h"
#include "twins/query.h"

using namespace doppel;

namespace {

// One store for the whole run (reachable from a global: not a leak), on an empty database.
storage::SqliteTwinStore& store() {
  static testing::TempDir* dir = new testing::TempDir("doppel-fuzz-query-");
  static Metrics* metrics = new Metrics();
  static storage::SqliteTwinStore* s = [] {
    storage::StoreOptions o;
    o.path = dir->file("fuzz.db");
    auto opened = storage::SqliteTwinStore::open(o, *metrics);
    if (!opened) {
      std::fprintf(stderr, "fuzz_query: %s\n", opened.status().to_string().c_str());
      std::abort();
    }
    return opened->release();
  }();
  return *s;
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
  }
  (void)twins::parse_query_order(text);
  if (auto c = twins::parse_cursor(text)) {
    if (twins::cursor_text(*c) != text) std::abort();
  }
  return 0;
}
