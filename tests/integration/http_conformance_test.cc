// The HTTP front end against what RFC 9110/9112 require of a server, spoken byte by byte over a
// raw socket to the real doppeld: framing a server must refuse and close (request smuggling
// through Transfer-Encoding), HEAD wherever GET, absolute-form targets, Host, Expect:
// 100-continue, the Bearer scheme's case, form-encoded query strings, and malformed
// percent-escapes refused instead of read as empty. Streams are capped per client and in all.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/harness.h"
#include "tests/support/raw_http.h"

using namespace doppel::testing;

namespace {

// The response headers' value of `name` (as doppeld writes it), or "".
std::string header_of(const std::string& response, const std::string& name) {
  const size_t at = response.find("\r\n" + name + ": ");
  if (at == std::string::npos) return "";
  const size_t from = at + name.size() + 4;
  return response.substr(from, response.find("\r\n", from) - from);
}

// Sends `request` on a new connection; the first response, and whether the server then closed
// the connection (it answers nothing more, whatever else the bytes held).
std::pair<std::string, bool> exchange_then_closed(int port, const std::string& request) {
  Raw c(port);
  REQUIRE(c.send(request));
  std::string first = c.response(10s);
  // Anything else the server says, or its close, within a bound far past a normal answer.
  std::string rest = c.response(3s);
  return {first, c.closed() && rest.empty()};
}

}  // namespace

TEST_CASE("Transfer-Encoding a server cannot frame is refused and the connection closed") {
  Stack stack;
  auto& gw = stack.gateway;
  REQUIRE(gw.request("PUT", "/v1/twins/victim", "{}").status == 201);
  // A second request hidden in the first one's body: a server that reads the first as bodiless
  // and keeps the connection would run it.
  const std::string smuggled = "DELETE /v1/twins/victim HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (const std::string te :
       {"gzip", "identity", "xchunked", "chunked, chunked", "chunked, gzip"}) {
    CAPTURE(te);
    auto [r, closed] = exchange_then_closed(
        gw.http_port(),
        "POST /v1/twins/a/desired HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: " + te +
            "\r\nContent-Type: application/json\r\n\r\n" + smuggled);
    CHECK(status_of(r) == 400);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:malformed");
    CHECK(closed);
  }
  {  // A coding doppeld does not implement before chunked: 501, closed.
    auto [r, closed] = exchange_then_closed(gw.http_port(),
                                            "POST /v1/twins/a/desired HTTP/1.1\r\nHost: "
                                            "127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                            "0\r\n\r\n" +
                                                smuggled);
    CHECK(status_of(r) == 501);
    CHECK(closed);
  }
  {  // Both framings at once.
    auto [r, closed] = exchange_then_closed(
        gw.http_port(),
        "POST /v1/twins/a/desired HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
            smuggled);
    CHECK(status_of(r) == 400);
    CHECK(closed);
  }
  // Nothing smuggled ran.
  CHECK(gw.get("/v1/twins/victim").status == 200);
  // A well-framed chunked request still works (and the connection stays open).
  Raw c(gw.http_port());
  REQUIRE(
      c.send("PATCH /v1/twins/victim/desired HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: "
             "chunked\r\nContent-Type: application/merge-patch+json\r\n\r\n7\r\n{\"m\":1}\r\n"
             "0\r\n\r\nGET /v1/twins/victim HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  CHECK(status_of(c.response(10s)) == 200);
  const std::string second = c.response(10s);
  CHECK(status_of(second) == 200);
  CHECK(body_of(second)["desired"]["m"] == 1);
  CHECK(gw.stop() == 0);
}

TEST_CASE("HEAD, absolute-form targets, Host, Expect and the Bearer scheme as RFC 9110/9112 say") {
  Stack stack({"--api-token", "ops=s3cret"});
  auto& gw = stack.gateway;
  const std::vector<std::pair<std::string, std::string>> auth = {
      {"Authorization", "Bearer s3cret"}};
  REQUIRE(gw.request("PUT", "/v1/twins/t-1", "{}", auth).status == 201);
  const std::string bearer = "Authorization: Bearer s3cret\r\n";
  {  // HEAD: GET's status and headers, no body; the connection goes on.
    Raw c(gw.http_port());
    REQUIRE(c.send("GET /v1/twins/t-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer + "\r\n"));
    const std::string get = c.response(10s);
    REQUIRE(status_of(get) == 200);
    REQUIRE(c.send("HEAD /v1/twins/t-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer + "\r\n" +
                   "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    // Content-Length is GET's, but no body follows: read the headers alone.
    CHECK(c.fill(10s));
    const std::string& head = c.buffered();
    CHECK(status_of(head) == 200);
    CHECK(header_of(head, "Content-Length") == header_of(get, "Content-Length"));
    CHECK(header_of(head, "ETag") == header_of(get, "ETag"));
    const size_t end = head.find("\r\n\r\n");
    REQUIRE(end != std::string::npos);
    // What follows the first head is the second answer's head, not a body.
    std::string after = head.substr(end + 4);
    while (after.find("\r\n\r\n") == std::string::npos && c.fill(10s)) {
      after = c.buffered().substr(end + 4);
    }
    CHECK(after.rfind("HTTP/1.1 200", 0) == 0);
    // 405 answers name HEAD beside GET.
    Raw d(gw.http_port());
    REQUIRE(d.send("PUT /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"));
    const std::string r = d.response(10s);
    CHECK(status_of(r) == 405);
    CHECK(header_of(r, "Allow").find("HEAD") != std::string::npos);
  }
  {  // Absolute form: routed by its path and query.
    Raw c(gw.http_port());
    REQUIRE(c.send("GET http://127.0.0.1/v1/twins/t-1?fields=id HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                   bearer + "\r\n"));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 200);
    CHECK(body_of(r)["id"] == "t-1");
  }
  {  // HTTP/1.1 without Host, or with two: 400.
    auto [none, c1] = exchange_then_closed(gw.http_port(), "GET /healthz HTTP/1.1\r\n\r\n");
    CHECK(status_of(none) == 400);
    auto [two, c2] =
        exchange_then_closed(gw.http_port(), "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    CHECK(status_of(two) == 400);
    // HTTP/1.0 needs none.
    Raw c(gw.http_port());
    REQUIRE(c.send("GET /healthz HTTP/1.0\r\n\r\n"));
    CHECK(status_of(c.response(10s)) == 200);
  }
  {  // Expect: 100-continue gets 100 before the client sends the body; other expectations 417.
    Raw c(gw.http_port());
    const std::string body = "{\"e\":1}";
    REQUIRE(c.send("PATCH /v1/twins/t-1/desired HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer +
                   "Content-Type: application/merge-patch+json\r\nExpect: 100-continue\r\n"
                   "Content-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n"));
    CHECK(c.fill(10s));
    CHECK(c.buffered().rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
    c.clear();
    REQUIRE(c.send(body));
    CHECK(status_of(c.response(10s)) == 200);
    auto [r, closed] = exchange_then_closed(
        gw.http_port(), "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: teapot\r\n\r\n");
    CHECK(status_of(r) == 417);
  }
  // The scheme's name is case-insensitive; the token is not.
  CHECK(gw.request("GET", "/v1/twins/t-1", "", {{"Authorization", "bearer s3cret"}}).status == 200);
  CHECK(gw.request("GET", "/v1/twins/t-1", "", {{"Authorization", "BEARER  s3cret"}}).status ==
        200);
  CHECK(gw.request("GET", "/v1/twins/t-1", "", {{"Authorization", "Bearer S3CRET"}}).status == 401);
  CHECK(gw.request("GET", "/v1/twins/t-1", "", {{"Authorization", "Bearers3cret"}}).status == 401);
  CHECK(gw.stop() == 0);
}

TEST_CASE(
    "without a token, a Host that is not loopback is refused on every route (DNS rebinding)") {
  Stack stack;  // no --api-token: the loopback default
  auto& gw = stack.gateway;
  for (const char* path : {"/healthz", "/v1/twins", "/v1/openapi.json"}) {
    Raw c(gw.http_port());
    REQUIRE(c.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: evil.example:" +
                   std::to_string(gw.http_port()) + "\r\n\r\n"));
    const std::string evil = c.response(10s);
    CHECK_MESSAGE(status_of(evil) == 403, path);
    CHECK(header_of(evil, "Content-Type") == "application/problem+json");
    CHECK(evil.find("DNS rebinding") != std::string::npos);
  }
  for (const std::string& host : {std::string("localhost:") + std::to_string(gw.http_port()),
                                  std::string("[::1]"), std::string("127.0.0.1")}) {
    Raw c(gw.http_port());
    REQUIRE(c.send("GET /v1/twins HTTP/1.1\r\nHost: " + host + "\r\n\r\n"));
    CHECK_MESSAGE(status_of(c.response(10s)) == 200, host);
  }
}

TEST_CASE("query strings: '+' is a space, and a malformed escape is refused, never read as empty") {
  Stack stack;
  auto& gw = stack.gateway;
  for (int i = 0; i < 5; ++i) {
    REQUIRE(gw.request("PUT", "/v1/twins/q-" + std::to_string(i),
                       R"({"tags": {"site": ")" + std::string(i < 2 ? "a b" : "c") + "\"}}")
                .status == 201);
  }
  // Form encoding (curl --data-urlencode, URLSearchParams): spaces as '+'. (Sent raw: the
  // harness's client would escape the '+'.)
  Raw c(gw.http_port());
  REQUIRE(
      c.send("GET /v1/fleet/count?q=tags.site+%3D+%27a+b%27 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const std::string plus = c.response(10s);
  CHECK_MESSAGE(status_of(plus) == 200, plus);
  CHECK(body_of(plus)["count"] == 2);
  auto pct = gw.get("/v1/fleet/count?q=tags.site%20%3D%20%27a%20b%27");
  CHECK(pct.body["count"] == 2);
  // A malformed escape in any parameter: 400 naming it, nothing read or done.
  for (const std::string bad :
       {"/v1/fleet/count?q=tags.site%20%3D%20%27c%27%zz",
        "/v1/twins?q=tags.site+%3D+%27c%27&cursor=q-1%2", "/v1/twins?order_by=id%g1",
        "/v1/twins?fields=id,tags%", "/v1/events?after_seq=1&kind=desired%2x"}) {
    CAPTURE(bad);
    auto r = gw.get(bad);
    CHECK(r.status == 400);
    CHECK(r.body["type"] == "urn:doppel:problem:malformed");
    CHECK(r.body["detail"].get<std::string>().find("query parameter '") == 0);
  }
  auto del = gw.request("DELETE", "/v1/twins/q-0?x=%");
  CHECK(del.status == 400);
  CHECK(gw.get("/v1/twins/q-0").status == 200);
  CHECK(gw.stop() == 0);
}

TEST_CASE("streams are capped per client address and in all; a refused one changes nothing") {
  Stack stack({"--http-max-streams-per-ip", "2", "--http-max-streams", "3"});
  auto& gw = stack.gateway;
  const std::string sse =
      "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
  auto open_stream = [&](const char* source) {
    auto c = std::make_unique<Raw>(gw.http_port(), source);
    REQUIRE(c->send(sse));
    CHECK(c->fill(10s));
    return c;
  };
  auto responses = [](const std::string& text, const char* cls) {
    return metric(text, std::string("doppel_http_responses_total{class=\"") + cls + "xx\"}");
  };
  const std::string metrics_before = gw.text("/metrics");
  std::vector<std::unique_ptr<Raw>> open;
  open.push_back(open_stream("127.0.0.2"));
  open.push_back(open_stream("127.0.0.2"));
  for (auto& c : open) CHECK(status_of(c->buffered()) == 200);
  {  // A third from the same address: 429; the connection serves ordinary requests after it.
    Raw c(gw.http_port(), "127.0.0.2");
    REQUIRE(c.send(sse));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 429);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:too_many_streams");
    CHECK(header_of(r, "Retry-After") == "5");
    REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    CHECK(status_of(c.response(10s)) == 200);
  }
  open.push_back(open_stream("127.0.0.3"));
  CHECK(status_of(open.back()->buffered()) == 200);
  {  // The fourth in all, from another address: 503.
    Raw c(gw.http_port(), "127.0.0.4");
    REQUIRE(c.send(sse));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 503);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:unavailable");
  }
  const std::string metrics = gw.text("/metrics");
  CHECK(metric(metrics, "doppel_http_refused_total{reason=\"max_streams_per_ip\"}") == 1);
  CHECK(metric(metrics, "doppel_http_refused_total{reason=\"max_streams\"}") == 1);
  // Each answer counted once, by what it was: three streams, a /healthz and the /metrics read
  // before them; the two refusals.
  CHECK(responses(metrics, "2") - responses(metrics_before, "2") == 5);
  CHECK(responses(metrics, "4") - responses(metrics_before, "4") == 1);
  CHECK(responses(metrics, "5") - responses(metrics_before, "5") == 1);
  // Closing one gives its place back (once the server sees the close: at the latest at the next
  // heartbeat, 15 s).
  open.erase(open.begin());
  CHECK(eventually(
      [&] {
        Raw c(gw.http_port(), "127.0.0.4");
        return c.send(sse) && status_of(c.response(10s)) == 200;
      },
      40s));
  CHECK(gw.stop() == 0);
}
