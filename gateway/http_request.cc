// The request and response helpers of http_server.h: header and query-parameter access,
// percent- and form-decoding, and problem+json answers. No sockets
// here: only Beast's table of reason phrases.
#include <boost/beast/http/status.hpp>
#include <cctype>

#include "gateway/http_server.h"
#include "twins/document.h"

namespace doppel::gateway {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

}  // namespace

std::string reason_phrase(int status) {
  namespace http = boost::beast::http;
  const auto r = http::obsolete_reason(static_cast<http::status>(status));
  return r.empty() ? std::string("Error") : std::string(r);
}

std::optional<std::string> HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return std::nullopt;
}

namespace {

// Percent-decoding; with `plus_is_space`, '+' is a space (form encoding, for query strings).
std::optional<std::string> decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && plus_is_space) {
      out += ' ';
      continue;
    }
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      return std::nullopt;
    }
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

// Calls f(raw name, raw value) for each pair of a query string, in order.
template <class F>
void each_pair(std::string_view q, F f) {
  while (!q.empty()) {
    const size_t amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    const size_t eq = pair.find('=');
    f(pair.substr(0, eq), eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view s) { return decode(s, false); }

std::optional<std::string> query_decode(std::string_view s) { return decode(s, true); }

std::optional<std::string> HttpRequest::malformed_param() const {
  std::optional<std::string> bad;
  each_pair(query, [&](std::string_view name, std::string_view value) {
    if (bad) return;
    auto n = query_decode(name);
    if (!n || !query_decode(value)) bad = n.value_or(std::string(name));
  });
  return bad;
}

std::optional<std::string> HttpRequest::param(std::string_view name) const {
  auto all = params(name);
  if (all.empty()) return std::nullopt;
  return std::move(all.front());
}

std::vector<std::string> HttpRequest::params(std::string_view name) const {
  std::vector<std::string> out;
  each_pair(query, [&](std::string_view raw_name, std::string_view value) {
    if (query_decode(raw_name) == name) out.push_back(query_decode(value).value_or(std::string()));
  });
  return out;
}

HttpResponse problem_response(int status, std::string_view code, std::string_view detail,
                              std::string_view instance) {
  twins::json p = {{"type", "urn:doppel:problem:" + std::string(code)},
                   {"title", reason_phrase(status)},
                   {"status", status},
                   {"detail", detail}};
  if (!instance.empty()) p["instance"] = instance;
  HttpResponse r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = twins::to_text(p);
  return r;
}

}  // namespace doppel::gateway
