// Problem responses (RFC 9457) and JSON answers, the one vocabulary every handler answers in:
// a Status code maps to one HTTP status and one problem type (urn:doppel:problem:<code>), each
// listed in the OpenAPI document.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "gateway/http_server.h"
#include "twins/document.h"
#include "twins/status.h"

namespace doppel::gateway {

// The HTTP status for a Status code (400, 404, 409, 412, 413, 429, 503, 500).
int http_status(StatusCode code);
// An RFC 9457 problem document, as text.
std::string problem_json(int status, std::string_view code, std::string_view detail,
                         std::string_view instance = {});
// A Status (not OK) as a problem response.
HttpResponse status_response(const Status& status, std::string_view instance = {});

// On a 503 not_owner answer (StatusCode::kNotOwner): the twin's partition is not served by this
// cluster node now; a node that forwarded the request may send it again.
inline constexpr const char* kNotOwnerHeader = "Doppel-Not-Owner";
// `body` as application/json.
HttpResponse json_response(int status, const twins::json& body);

}  // namespace doppel::gateway
