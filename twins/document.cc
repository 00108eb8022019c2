#include "twins/document.h"

#include <cmath>
#include <limits>

namespace doppel::twins {
namespace {

bool id_char(char c, bool first) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  return !first && (c == '.' || c == '_' || c == ':' || c == '-');
}

Status check_keys_and_depth(const json& value, const Limits& limits, std::string_view what,
                            int depth, std::string& path) {
  if (value.is_object()) {
    if (depth + 1 > limits.max_depth) {
      return Status(StatusCode::kTooDeep, std::string(what) + " nests deeper than " +
                                              std::to_string(limits.max_depth) + " levels at '" +
                                              (path.empty() ? "/" : path) + "'");
    }
    for (const auto& [key, child] : value.items()) {
      if (key.size() > limits.max_key_bytes) {
        return Status(StatusCode::kInvalidArgument,
                      std::string(what) + " has a key of " + std::to_string(key.size()) +
                          " bytes at '" + (path.empty() ? "/" : path) + "'; keys are limited to " +
                          std::to_string(limits.max_key_bytes) + " bytes");
      }
      if (key.empty()) {
        return Status(StatusCode::kInvalidArgument, std::string(what) + " has an empty key at '" +
                                                        (path.empty() ? "/" : path) + "'");
      }
      if (key.find('\0') != std::string::npos) {
        return Status(StatusCode::kInvalidArgument,
                      std::string(what) + " has a key containing U+0000 at '" +
                          (path.empty() ? "/" : path) + "'; keys may not contain NUL");
      }
      const size_t mark = path.size();
      path += '/';
      path += key;
      Status s = check_keys_and_depth(child, limits, what, depth + 1, path);
      path.resize(mark);
      if (!s) return s;
    }
  } else if (value.is_array()) {
    if (depth + 1 > limits.max_depth) {
      return Status(StatusCode::kTooDeep, std::string(what) + " nests deeper than " +
                                              std::to_string(limits.max_depth) + " levels at '" +
                                              (path.empty() ? "/" : path) + "'");
    }
    for (const auto& child : value) {
      Status s = check_keys_and_depth(child, limits, what, depth + 1, path);
      if (!s) return s;
    }
  }
  return Status::ok();
}

bool numbers_equal(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    if (a.is_number_unsigned() && b.is_number_unsigned())
      return a.get<uint64_t>() == b.get<uint64_t>();
    if (a.is_number_unsigned()) {
      const int64_t bi = b.get<int64_t>();
      return bi >= 0 && a.get<uint64_t>() == static_cast<uint64_t>(bi);
    }
    if (b.is_number_unsigned()) {
      const int64_t ai = a.get<int64_t>();
      return ai >= 0 && b.get<uint64_t>() == static_cast<uint64_t>(ai);
    }
    return a.get<int64_t>() == b.get<int64_t>();
  }
  return a.get<double>() == b.get<double>();
}

}  // namespace

bool valid_device_id(std::string_view id, const Limits& limits) {
  if (id.empty() || id.size() > limits.max_id_bytes) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    if (!id_char(id[i], i == 0)) return false;
  }
  return true;
}

bool valid_command_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status check_device_id(std::string_view id, const Limits& limits) {
  if (valid_device_id(id, limits)) return Status::ok();
  std::string shown(id.substr(0, 64));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return Status(StatusCode::kInvalidId,
                "device id '" + shown + (id.size() > 64 ? "...'" : "'") +
                    " is invalid: ids are 1 to " + std::to_string(limits.max_id_bytes) +
                    " characters, start with a letter or digit, and use only letters, digits and "
                    "'.', '_', ':', '-'");
}

int json_text_depth(std::string_view text, int stop_above) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > stop_above) return deepest;
      }
    } else if (c == '}' || c == ']') {
      if (depth > 0) --depth;
    }
  }
  return deepest;
}

Result<json> parse_json(std::string_view text, size_t max_bytes, int max_depth) {
  if (text.size() > max_bytes) {
    return Status(StatusCode::kTooLarge, "payload of " + std::to_string(text.size()) +
                                             " bytes exceeds the limit of " +
                                             std::to_string(max_bytes) + " bytes");
  }
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    // nlohmann's lexer takes a NUL byte for the end of the input and would ignore the rest.
    return Status(StatusCode::kMalformed,
                  "malformed JSON: a NUL byte at offset " + std::to_string(nul) +
                      "; JSON text may not contain one (escape it as \\u0000 inside a string)");
  }
  if (json_text_depth(text, max_depth) > max_depth) {
    return Status(StatusCode::kTooDeep,
                  "JSON nests deeper than " + std::to_string(max_depth) + " levels");
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    // parse_error ("parse error at line 1, column 2: ...") or out_of_range (a number too large
    // for a double); drop the "[json.exception.parse_error.101] " tag.
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return Status(StatusCode::kMalformed, "malformed JSON: " + what);
  }
}

int depth_of(const json& value) {
  if (!value.is_structured()) return 0;
  int deepest = 0;
  for (const auto& child : value) deepest = std::max(deepest, depth_of(child));
  return deepest + 1;
}

Status check_state_document(const json& doc, const Limits& limits, std::string_view what,
                            bool check_size) {
  if (!doc.is_object()) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(what) + " must be a JSON object, not " + doc.type_name());
  }
  std::string path;
  if (Status s = check_keys_and_depth(doc, limits, what, 0, path); !s) return s;
  if (check_size) {
    const size_t bytes = to_text(doc).size();
    if (bytes > limits.max_document_bytes) {
      return Status(StatusCode::kTooLarge, std::string(what) + " is " + std::to_string(bytes) +
                                               " bytes serialized; the limit is " +
                                               std::to_string(limits.max_document_bytes));
    }
  }
  return Status::ok();
}

std::string to_text(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool values_equal(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return numbers_equal(a, b);
  if (a.type() != b.type()) return false;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    auto ia = a.begin();
    auto ib = b.begin();
    for (; ia != a.end(); ++ia, ++ib) {
      if (ia.key() != ib.key() || !values_equal(*ia, *ib)) return false;
    }
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!values_equal(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace doppel::twins
