// libFuzzer: the fleet query parser. Never crashes or recurses without bound; an error is
// kInvalidArgument and names a column within the text (or just past its end); a cursor that
// parses is rebuilt exactly.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "twins/query.h"

using namespace doppel;

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
  (void)twins::parse_query_order(text);
  if (auto c = twins::parse_cursor(text)) {
    if (twins::cursor_text(*c) != text) std::abort();
  }
  return 0;
}
