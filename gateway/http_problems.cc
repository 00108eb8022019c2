#include "gateway/http_problems.h"

namespace doppel::gateway {

int http_status(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kMalformed:
    case StatusCode::kInvalidArgument:
    case StatusCode::kInvalidId:
    case StatusCode::kTooDeep:
      return 400;
    case StatusCode::kTooLarge:
      return 413;
    case StatusCode::kGone:
      return 410;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kPreconditionFailed:
      return 412;
    case StatusCode::kConflict:
      return 409;
    case StatusCode::kQueueFull:
      return 429;
    case StatusCode::kUnavailable:
    case StatusCode::kTimeout:
    case StatusCode::kFenced:
    case StatusCode::kNotOwner:
      return 503;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

std::string problem_json(int status, std::string_view code, std::string_view detail,
                         std::string_view instance) {
  return problem_response(status, code, detail, instance).body;
}

HttpResponse status_response(const Status& status, std::string_view instance) {
  HttpResponse r = problem_response(http_status(status.code()), code_name(status.code()),
                                    status.message(), instance);
  // Everything answered 503 passes: the store back, a partition's new owner known (cluster).
  if (r.status == 503) r.headers.emplace_back("Retry-After", "1");
  if (status.code() == StatusCode::kNotOwner) r.headers.emplace_back(kNotOwnerHeader, "1");
  return r;
}

HttpResponse json_response(int status, const twins::json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = twins::to_text(body);
  return r;
}

}  // namespace doppel::gateway
