#include "gateway/http_router.h"

#include <atomic>
#include <cstdio>
#include <random>

namespace doppel::gateway {
namespace {

bool usable_request_id(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// "<random per process>-<counter>": unique within and across runs, and cheap.
std::string new_request_id() {
  static const uint32_t kPrefix = std::random_device{}();
  static std::atomic<uint64_t> next{1};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%llx", kPrefix,
                static_cast<unsigned long long>(next.fetch_add(1, std::memory_order_relaxed)));
  return buf;
}

const std::string kGet = "GET";

}  // namespace

std::optional<std::vector<std::string>> path_segments(const std::string& raw_path) {
  std::vector<std::string> out;
  size_t start = 1;  // after the leading '/'
  if (raw_path.empty() || raw_path[0] != '/') return std::nullopt;
  while (start <= raw_path.size()) {
    const size_t slash = raw_path.find('/', start);
    const std::string_view raw = std::string_view(raw_path).substr(
        start, slash == std::string::npos ? std::string::npos : slash - start);
    auto decoded = percent_decode(raw);
    if (!decoded) return std::nullopt;
    out.push_back(std::move(*decoded));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (!out.empty() && out.back().empty()) out.pop_back();  // a trailing '/'
  return out;
}

void Router::add(std::string method, std::string pattern, RouteHandler handler, Access access) {
  Route r{std::move(method), std::move(pattern), {}, std::move(handler), access};
  r.parts = *path_segments(r.pattern);
  routes_.push_back(std::move(r));
}

bool Router::matches(const Route& r, const std::vector<std::string>& segments) {
  if (r.parts.size() != segments.size()) return false;
  for (size_t i = 0; i < r.parts.size(); ++i) {
    if (r.parts[i].front() != '{' && r.parts[i] != segments[i]) return false;
  }
  return true;
}

void Router::dispatch(HttpRequest&& req, Responder respond, const Guard& guard) const {
  auto x = std::make_shared<Exchange>();
  x->req = std::move(req);
  std::string given = x->req.header("X-Request-Id").value_or("");
  x->request_id = usable_request_id(given) ? std::move(given) : new_request_id();
  x->respond = [respond = std::move(respond), id = x->request_id](HttpResponse r) {
    r.headers.emplace_back("X-Request-Id", id);
    respond(std::move(r));
  };
  auto segs = path_segments(x->req.path);
  if (!segs) return x->problem(400, "malformed", "the path has a malformed percent-escape");
  if (auto bad = x->req.malformed_param()) {
    return x->problem(400, "malformed",
                      "query parameter '" + *bad +
                          "' has a malformed percent-escape (% must be followed by two hex "
                          "digits; encode a literal % as %25)");
  }
  x->segments = std::move(*segs);
  std::string allow;
  Access access = Access::kToken;
  // HEAD is answered wherever GET is, with GET's headers and no body (RFC 9110 §9.3.2; the
  // server drops the body).
  const std::string& method = x->req.method == "HEAD" ? kGet : x->req.method;
  for (const Route& r : routes_) {
    if (!matches(r, x->segments)) continue;
    if (method != r.method) {
      allow += (allow.empty() ? "" : ", ") + r.method;
      if (r.method == kGet) allow += ", HEAD";
      if (r.access == Access::kOpen) access = Access::kOpen;
      continue;
    }
    if (auto refusal = guard(*x, r.access)) return x->send(std::move(*refusal));
    return r.handler(x);
  }
  if (auto refusal = guard(*x, access)) return x->send(std::move(*refusal));
  if (!allow.empty()) {
    HttpResponse r =
        problem_response(405, "method_not_allowed", "this resource answers " + allow, x->req.path);
    r.headers.emplace_back("Allow", allow);
    return x->send(std::move(r));
  }
  x->problem(404, "not_found",
             "no such resource or method; see GET /v1/openapi.json (e.g. GET /v1/twins/{id})");
}

std::vector<std::pair<std::string, std::string>> Router::routes() const {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(routes_.size());
  for (const auto& r : routes_) out.emplace_back(r.method, r.pattern);
  return out;
}

}  // namespace doppel::gateway
