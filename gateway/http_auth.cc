#include "gateway/http_auth.h"

#include <algorithm>

namespace doppel::gateway {
namespace {

// Compares without an early exit, so timing does not reveal how much of a token matched.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  }
  return diff == 0;
}

bool any_matches(const std::vector<std::string>& tokens, const std::string& given) {
  bool found = false;
  for (const auto& t : tokens) found |= same_secret(given, t);
  return found;
}

}  // namespace

ApiAuth::ApiAuth(std::vector<std::string> tokens, std::vector<std::string> read_tokens)
    : tokens_(std::move(tokens)), read_tokens_(std::move(read_tokens)) {}

std::optional<HttpResponse> ApiAuth::refuse(const HttpRequest& req, bool open_route) const {
  if (tokens_.empty() && read_tokens_.empty()) return std::nullopt;
  if (open_route) return std::nullopt;
  const std::string header = req.header("Authorization").value_or("");
  const std::string token = header.rfind("Bearer ", 0) == 0 ? header.substr(7) : std::string();
  if (!token.empty() && any_matches(tokens_, token)) return std::nullopt;
  if (!token.empty() && any_matches(read_tokens_, token)) {
    if (req.method == "GET" || req.method == "HEAD") return std::nullopt;
    return problem_response(
        403, "forbidden",
        "this token may only read (GET); changes need a token given with --api-token", req.path);
  }
  HttpResponse r =
      problem_response(401, "unauthorized",
                       token.empty() ? "send 'Authorization: Bearer <token>'; see --api-token"
                                     : "the bearer token is not valid",
                       req.path);
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"doppel\"");
  return r;
}

}  // namespace doppel::gateway
