#include "twins/status.h"

namespace doppel {

std::string_view code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kMalformed:
      return "malformed";
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kInvalidId:
      return "invalid_id";
    case StatusCode::kTooLarge:
      return "too_large";
    case StatusCode::kTooDeep:
      return "too_deep";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kPreconditionFailed:
      return "precondition_failed";
    case StatusCode::kConflict:
      return "conflict";
    case StatusCode::kQueueFull:
      return "queue_full";
    case StatusCode::kUnavailable:
      return "unavailable";
    case StatusCode::kInternal:
      return "internal";
    case StatusCode::kTimeout:
      return "timeout";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  std::string s(code_name(code_));
  s += ": ";
  s += message_;
  return s;
}

}  // namespace doppel
