// The checks every JSON device message goes through, in either dialect (codec.cc, aws_codec.cc):
// the envelope parsed within the limits, the fields allowed, strings bounded.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "twins/document.h"
#include "twins/status.h"

namespace doppel::mqtt::detail {

Status malformed(const std::string& message);
Status invalid(const std::string& message);

// kInvalidArgument naming the first field of `obj` not in `allowed`.
Status only_fields(const twins::json& obj, std::initializer_list<std::string_view> allowed,
                   std::string_view what);
// Sets `out` from the string `field` of `obj` when present and not null; refuses another type or
// one longer than `max` bytes.
Status optional_string(const twins::json& obj, const char* field, size_t max, std::string& out);
// The payload as a JSON object within the payload and depth limits (an empty payload is an empty
// object when `empty_ok`).
Result<twins::json> parse_envelope(std::string_view payload, const twins::Limits& limits,
                                   bool empty_ok);

}  // namespace doppel::mqtt::detail
