// The web console's files (gateway/console/, compiled in): GET / and the pages under /console/
// answer the one HTML page (the script picks the view from the path), /console/assets/<name> the
// scripts, styles and libraries. They hold no data, so they need no token (every data call the
// page makes does). Each answer carries an ETag (a hash of its bytes; If-None-Match → 304), is
// gzip-compressed when the client accepts it (compressed once, on first use), and carries the
// headers that keep a page from running anything but its own scripts (docs/security.md).
#include <openssl/evp.h>
#include <zlib.h>

#include <map>
#include <mutex>
#include <set>

#include "gateway/api_handlers.h"
#include "gateway/console_assets.h"

namespace doppel::gateway {
namespace {

// No inline script or style, nothing from another origin, not framed.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

// The pages the script knows (the first segment under /console/); twins/{id} besides.
const std::set<std::string, std::less<>> kPages = {"fleet", "jobs", "events", "system"};

struct Served {
  std::string_view content_type;
  std::string_view plain;
  std::string gzip;
  std::string etag;  // of the plain bytes; the gzip variant's ends in "-gz"
};

std::string_view content_type_of(std::string_view name) {
  auto ends = [&](std::string_view ext) {
    return name.size() >= ext.size() && name.substr(name.size() - ext.size()) == ext;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

std::string sha256_prefix(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 12 && i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

// gzip (RFC 1952) at the best compression; empty if zlib fails (the plain bytes are served).
std::string gzip(std::string_view data) {
  z_stream z{};
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    return {};
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return rc == Z_STREAM_END ? out : std::string();
}

const std::map<std::string, Served, std::less<>>& served() {
  static const auto* const kServed = [] {
    auto* m = new std::map<std::string, Served, std::less<>>();
    for (const ConsoleAsset& a : console_assets()) {
      m->emplace(std::string(a.name), Served{content_type_of(a.name), a.data, gzip(a.data),
                                             "\"" + sha256_prefix(a.data) + "\""});
    }
    return m;
  }();
  return *kServed;
}

bool accepts_gzip(const HttpRequest& req) {
  const auto h = req.header("Accept-Encoding");
  if (!h) return false;
  // "gzip" listed without q=0 (the forms browsers send).
  const size_t at = h->find("gzip");
  if (at == std::string::npos) return false;
  const size_t end = h->find(',', at);
  const std::string_view item =
      std::string_view(*h).substr(at, end == std::string::npos ? std::string::npos : end - at);
  return item.find("q=0") == std::string_view::npos || item.find("q=0.") != std::string_view::npos;
}

// Whether If-None-Match names `etag` (either variant), or is "*".
bool not_modified(const HttpRequest& req, std::string_view etag) {
  const auto h = req.header("If-None-Match");
  if (!h) return false;
  if (*h == "*") return true;
  const std::string gz = std::string(etag.substr(0, etag.size() - 1)) + "-gz\"";
  return h->find(etag) != std::string::npos || h->find(gz) != std::string::npos;
}

void serve(Exchange& x, std::string_view name) {
  const auto& assets = served();
  const auto it = assets.find(name);
  if (it == assets.end()) {
    return x.problem(404, "not_found", "no console file '" + std::string(name) + "'");
  }
  const Served& s = it->second;
  HttpResponse r;
  r.headers = {{"Content-Security-Policy", std::string(kContentSecurityPolicy)},
               {"X-Content-Type-Options", "nosniff"},
               {"X-Frame-Options", "DENY"},
               {"Referrer-Policy", "no-referrer"},
               {"Cache-Control", "no-cache"},
               {"Vary", "Accept-Encoding"}};
  const bool gz = !s.gzip.empty() && s.gzip.size() < s.plain.size() && accepts_gzip(x.req);
  const std::string etag = gz ? s.etag.substr(0, s.etag.size() - 1) + "-gz\"" : s.etag;
  r.headers.emplace_back("ETag", etag);
  if (not_modified(x.req, s.etag)) {
    r.status = 304;
    return x.send(std::move(r));
  }
  r.content_type = std::string(s.content_type);
  if (gz) {
    r.headers.emplace_back("Content-Encoding", "gzip");
    r.body = s.gzip;
  } else {
    r.body = std::string(s.plain);
  }
  x.send(std::move(r));
}

}  // namespace

void add_console_routes(Router& router) {
  using Access = Router::Access;
  router.add(
      "GET", "/", [](const ExchangePtr& x) { serve(*x, "index.html"); }, Access::kOpen);
  router.add(
      "GET", "/console", [](const ExchangePtr& x) { serve(*x, "index.html"); }, Access::kOpen);
  router.add(
      "GET", "/console/{page}",
      [](const ExchangePtr& x) {
        if (kPages.count(x->segments[1]) == 0) {
          return x->problem(404, "not_found",
                            "no console page '" + x->segments[1] +
                                "'; the pages are /console/fleet, /console/twins/{id}, "
                                "/console/jobs, /console/events and /console/system");
        }
        serve(*x, "index.html");
      },
      Access::kOpen);
  router.add(
      "GET", "/console/twins/{id}", [](const ExchangePtr& x) { serve(*x, "index.html"); },
      Access::kOpen);
  router.add(
      "GET", "/console/assets/{asset}", [](const ExchangePtr& x) { serve(*x, x->segments[2]); },
      Access::kOpen);
}

}  // namespace doppel::gateway
