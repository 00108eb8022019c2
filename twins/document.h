// The rules every state document and device id must satisfy (DESIGN §3), and JSON parsing that
// enforces them before a hostile input can cost memory or stack. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "twins/status.h"

namespace doppel::twins {

using json = nlohmann::json;

struct Limits {
  size_t max_id_bytes = 128;          // device ids: [A-Za-z0-9][A-Za-z0-9._:-]{0,127}
  size_t max_document_bytes = 16384;  // desired and reported, each, serialized
  int max_depth = 10;                 // nesting of a state document; {} is depth 1
  size_t max_key_bytes = 128;         // every object key
  // A whole device message or HTTP body: a document plus its envelope. Checked before parsing.
  size_t max_payload_bytes() const { return max_document_bytes + 4096; }
};

// True when `id` is a valid device id under `limits`.
bool valid_device_id(std::string_view id, const Limits& limits);
// OK, or kInvalidId with a message that says what is wrong and what is allowed.
Status check_device_id(std::string_view id, const Limits& limits);
// Command ids in topics and URLs (and job ids): [A-Za-z0-9._:-]{1,64}.
bool valid_command_id(std::string_view id);

// Deepest nesting of objects/arrays in JSON text, scanning at most until `stop_above` is exceeded.
// Works on malformed text too (it only counts brackets outside strings).
int json_text_depth(std::string_view text, int stop_above);

// Parses JSON text with the payload size cap and a depth cap of `max_depth` (callers add their
// envelope levels). kTooLarge, kTooDeep or kMalformed (with the parser's position) on failure.
Result<json> parse_json(std::string_view text, size_t max_bytes, int max_depth);

// Nesting depth of a parsed value: scalars 0, {} and [] 1.
int depth_of(const json& value);

// Checks a state document or merge patch: a JSON object, depth and key-length limits, and
// (unless `check_size` is false) the serialized size. `what` names it in the message ("desired").
Status check_state_document(const json& doc, const Limits& limits, std::string_view what,
                            bool check_size = true);

// Compact JSON text; invalid UTF-8 (which cannot come from our parsers) is replaced, not thrown.
std::string to_text(const json& value);

// Numbers compare by value (1 == 1.0); objects and arrays recursively.
bool values_equal(const json& a, const json& b);

}  // namespace doppel::twins
