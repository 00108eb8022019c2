// ApiAuth (gateway/http_auth.h): without a token, only requests whose Host names this gateway by
// a loopback name or address, or by the --http address, are answered (DNS rebinding); with
// tokens, the token decides and Host does not matter.
#include <doctest/doctest.h>

#include <string>

#include "gateway/http_auth.h"

using doppel::gateway::ApiAuth;
using doppel::gateway::HttpRequest;

namespace {

HttpRequest with_host(const char* host) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/v1/twins";
  if (host != nullptr) r.headers.emplace_back("Host", host);
  return r;
}

bool allowed(const ApiAuth& auth, const char* host, bool open_route = false) {
  std::string principal;
  return !auth.refuse(with_host(host), open_route, principal).has_value();
}

}  // namespace

TEST_CASE("without a token, a Host that is not a loopback name or address is refused") {
  const ApiAuth auth({}, {}, "127.0.0.1");
  for (const char* host :
       {"127.0.0.1:8080", "127.0.0.1", "127.1.2.3:80", "localhost:8080", "LOCALHOST", "localhost.",
        "console.localhost:8080", "[::1]:8080", "[::1]"}) {
    CHECK_MESSAGE(allowed(auth, host), host);
  }
  CHECK(allowed(auth, nullptr));  // no Host: not a browser's request
  for (const char* host :
       {"evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example",
        "notlocalhost", "10.0.0.5:8080", "[::2]:8080", "127.0.0.1.nip.io", ""}) {
    CHECK_MESSAGE(!allowed(auth, host), host);
    CHECK_MESSAGE(!allowed(auth, host, /*open_route=*/true), host);  // /healthz too
  }
  std::string principal;
  auto refused = auth.refuse(with_host("evil.example"), false, principal);
  REQUIRE(refused);
  CHECK(refused->status == 403);
  CHECK(refused->body.find("DNS rebinding") != std::string::npos);
}

TEST_CASE("the --http address is accepted as a Host too") {
  const ApiAuth auth({}, {}, "gw.internal");
  CHECK(allowed(auth, "gw.internal:8080"));
  CHECK(allowed(auth, "GW.internal"));
  CHECK(!allowed(auth, "other.internal:8080"));
}

TEST_CASE("with tokens the token decides, whatever the Host") {
  const ApiAuth auth({"s3cret"}, {}, "127.0.0.1");
  HttpRequest r = with_host("evil.example");
  r.headers.emplace_back("Authorization", "Bearer s3cret");
  std::string principal;
  CHECK(!auth.refuse(r, false, principal).has_value());
  CHECK(principal == "default");
}

TEST_CASE("host_of") {
  CHECK(ApiAuth::host_of("[::1]:8080") == "::1");
  CHECK(ApiAuth::host_of("Example.COM:443") == "example.com");
  CHECK(ApiAuth::host_of("::1") == "::1");  // a bare IPv6 address keeps its colons
  CHECK(ApiAuth::host_of("localhost.") == "localhost");
}
