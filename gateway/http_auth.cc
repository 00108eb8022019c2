#include "gateway/http_auth.h"

#include <algorithm>
#include <cctype>

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

// The name of the token that matches `given` (every one is compared), or nullptr.
const std::string* match(const std::vector<ApiAuth::Token>& tokens, const std::string& given) {
  const std::string* found = nullptr;
  for (const auto& t : tokens) {
    if (same_secret(given, t.secret) && found == nullptr) found = &t.name;
  }
  return found;
}

std::vector<ApiAuth::Token> parse_all(const std::vector<std::string>& texts) {
  std::vector<ApiAuth::Token> out;
  for (const auto& t : texts) out.push_back(ApiAuth::parse(t));
  return out;
}

}  // namespace

ApiAuth::Token ApiAuth::parse(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq != std::string::npos && eq > 0 && eq <= 64 && eq + 1 < text.size()) {
    const std::string name = text.substr(0, eq);
    const bool valid = std::all_of(name.begin(), name.end(), [](unsigned char c) {
      return std::isalnum(c) != 0 || c == '_' || c == '.' || c == '-';
    });
    if (valid) return {name, text.substr(eq + 1)};
  }
  return {"default", text};
}

ApiAuth::ApiAuth(std::vector<std::string> tokens, std::vector<std::string> read_tokens,
                 std::string http_host)
    : tokens_(parse_all(tokens)),
      read_tokens_(parse_all(read_tokens)),
      http_host_(host_of(http_host)) {}

std::string ApiAuth::host_of(std::string_view header) {
  std::string_view h = header;
  if (!h.empty() && h.front() == '[') {  // [v6]:port
    const size_t close = h.find(']');
    h = close == std::string_view::npos ? h.substr(1) : h.substr(1, close - 1);
  } else if (const size_t colon = h.find(':');
             colon != std::string_view::npos && h.find(':', colon + 1) == std::string_view::npos) {
    h = h.substr(0, colon);  // name:port (one colon; a bare IPv6 address has several)
  }
  std::string out(h);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!out.empty() && out.back() == '.') out.pop_back();  // "localhost." is localhost
  return out;
}

std::optional<HttpResponse> ApiAuth::refuse(const HttpRequest& req, bool open_route,
                                            std::string& principal) const {
  if (tokens_.empty() && read_tokens_.empty()) {
    const auto header = req.header("Host");
    if (!header) return std::nullopt;
    const std::string host = host_of(*header);
    const bool local_name =
        host == "localhost" ||
        (host.size() > 10 && host.compare(host.size() - 10, 10, ".localhost") == 0);
    const bool loopback_ip =
        host == "::1" ||
        (host.rfind("127.", 0) == 0 && host.find_first_not_of("0123456789.") == std::string::npos);
    if (local_name || loopback_ip || host == http_host_) return std::nullopt;
    return problem_response(
        403, "forbidden",
        "Host '" + host +
            "' does not name this gateway: without --api-token doppeld answers only requests "
            "for a loopback name or address (or the --http address), so that a web page cannot "
            "reach the API by rebinding its own name (DNS rebinding). Use "
            "http://127.0.0.1:<port>/, "
            "or configure --api-token",
        req.path);
  }
  if (open_route) return std::nullopt;
  const std::string header = req.header("Authorization").value_or("");
  // The scheme is case-insensitive (RFC 9110 §11.1); spaces may stand after it.
  auto is_bearer = [](const std::string& h) {
    if (h.size() < 7 || h[6] != ' ') return false;
    for (size_t i = 0; i < 6; ++i) {
      if (std::tolower(static_cast<unsigned char>(h[i])) != "bearer"[i]) return false;
    }
    return true;
  };
  std::string token;
  if (is_bearer(header)) {
    token = header.substr(header.find_first_not_of(' ', 6) == std::string::npos
                              ? header.size()
                              : header.find_first_not_of(' ', 6));
  }
  if (const std::string* name = token.empty() ? nullptr : match(tokens_, token)) {
    principal = *name;
    return std::nullopt;
  }
  if (const std::string* name = token.empty() ? nullptr : match(read_tokens_, token)) {
    principal = *name;
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
