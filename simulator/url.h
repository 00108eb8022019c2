// Percent-encoding of a query-string value (RFC 3986: everything but the unreserved characters
// A-Z a-z 0-9 - _ . ~ is escaped), for the simulator, the bench and the tests that build URLs.
#pragma once

#include <cctype>
#include <string>

namespace doppel::sim {

inline std::string percent_encode(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace doppel::sim
