#include "twins/status.h"

#include "twins/closed_set.h"

namespace doppel {

namespace {

constexpr twins::NameTable<StatusCode, kStatusCodeCount> kCodeNames{
    {"ok", "malformed", "invalid_argument", "invalid_id", "too_large", "too_deep", "not_found",
     "precondition_failed", "conflict", "queue_full", "unavailable", "internal", "timeout", "gone",
     "fenced", "not_owner"}};
static_assert(kCodeNames.covers(StatusCode::kNotOwner));

}  // namespace

std::string_view code_name(StatusCode code) { return kCodeNames.name(code); }
std::optional<StatusCode> parse_code_name(std::string_view name) { return kCodeNames.parse(name); }

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  std::string s(code_name(code_));
  s += ": ";
  s += message_;
  return s;
}

}  // namespace doppel
