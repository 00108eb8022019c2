// The web console's files as the real doppeld serves them (gateway/api_console.cc), over a raw
// socket so that the bytes on the wire are what is checked: the gzip form inflates to exactly the
// plain one, each carries its own ETag and If-None-Match gets 304 for either, the security
// headers are on every page path, unknown files and pages are 404 problem+json, HEAD has GET's
// headers and no body, and a foreign Host is refused without a token (DNS rebinding). The pages'
// behaviour in a browser: tests/console/. This one also runs under the sanitizers.
#include <doctest/doctest.h>
#include <zlib.h>

#include <string>

#include "tests/support/harness.h"
#include "tests/support/raw_http.h"

using namespace doppel::testing;

namespace {

std::string get(int port, const std::string& path, const std::string& extra = {},
                const std::string& method = "GET") {
  Raw c(port);
  REQUIRE(c.connected());
  REQUIRE(c.send(method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n"));
  return c.response(std::chrono::seconds(10));
}

std::string header(const std::string& response, const std::string& name) {
  const size_t at = response.find("\r\n" + name + ": ");
  if (at == std::string::npos) return {};
  const size_t from = at + name.size() + 4;
  return response.substr(from, response.find("\r\n", from) - from);
}

std::string body(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

std::string gunzip(const std::string& in) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
  std::string out(in.size() * 20 + 1024, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  out.resize(z.total_out);
  inflateEnd(&z);
  CHECK(rc == Z_STREAM_END);
  return out;
}

}  // namespace

TEST_CASE("console files: gzip, ETags, 304, security headers, 404s, HEAD, and the Host check") {
  Stack stack;
  const int port = stack.gateway.http_port();

  const std::string plain = get(port, "/console/assets/app.js");
  CHECK(status_of(plain) == 200);
  CHECK(header(plain, "Content-Type") == "text/javascript; charset=utf-8");
  CHECK(header(plain, "Content-Encoding").empty());
  CHECK(body(plain).find("import") != std::string::npos);
  const std::string zipped = get(port, "/console/assets/app.js", "Accept-Encoding: gzip, br\r\n");
  CHECK(status_of(zipped) == 200);
  CHECK(header(zipped, "Content-Encoding") == "gzip");
  CHECK(body(zipped).size() < body(plain).size());
  CHECK(gunzip(body(zipped)) == body(plain));
  const std::string etag = header(plain, "ETag");
  REQUIRE(etag.size() > 2);
  CHECK(header(zipped, "ETag") == etag.substr(0, etag.size() - 1) + "-gz\"");
  CHECK(status_of(get(port, "/console/assets/app.js", "If-None-Match: " + etag + "\r\n")) == 304);
  CHECK(status_of(get(port, "/console/assets/app.js",
                      "If-None-Match: " + header(zipped, "ETag") + "\r\n")) == 304);
  CHECK(status_of(get(port, "/console/assets/app.js", "If-None-Match: \"other\"\r\n")) == 200);

  for (const char* page : {"/", "/console", "/console/fleet", "/console/twins/pump-1"}) {
    CAPTURE(page);
    const std::string r = get(port, page);
    CHECK(status_of(r) == 200);
    CHECK(header(r, "Content-Type") == "text/html; charset=utf-8");
    CHECK(header(r, "Content-Security-Policy").find("script-src 'self'") != std::string::npos);
    CHECK(header(r, "Content-Security-Policy").find("frame-ancestors 'none'") != std::string::npos);
    CHECK(header(r, "X-Content-Type-Options") == "nosniff");
    CHECK(body(r).find("<script type=\"module\"") != std::string::npos);
  }
  const std::string head = get(port, "/console/fleet", "", "HEAD");
  CHECK(status_of(head) == 200);
  CHECK(!header(head, "ETag").empty());

  const std::string missing = get(port, "/console/assets/nope.js");
  CHECK(status_of(missing) == 404);
  CHECK(header(missing, "Content-Type") == "application/problem+json");
  CHECK(status_of(get(port, "/console/nowhere")) == 404);

  // Without a token only loopback names may ask, the console's files included.
  Raw evil(port);
  REQUIRE(evil.send("GET / HTTP/1.1\r\nHost: rebind.example:8080\r\n\r\n"));
  CHECK(status_of(evil.response(std::chrono::seconds(10))) == 403);
}
