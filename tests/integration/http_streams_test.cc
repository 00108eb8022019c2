// Streaming responses (GET /v1/debug/ticks, Server-Sent Events over chunked HTTP/1.1) against the
// real daemon: a stream ends cleanly after its last event; a client that leaves frees its stream;
// a stopping server ends open streams cleanly before it exits; bad parameters change nothing.
// The slow-reader bound is tested under load in http_frontend_test.
#include <doctest/doctest.h>

#include <signal.h>

#include "tests/support/harness.h"
#include "tests/support/raw_http.h"

using namespace doppel::testing;
using Clock = std::chrono::steady_clock;

namespace {

// Reads until the chunked stream's final chunk, the connection's end, or `within`.
std::string read_stream(Raw& c, std::chrono::milliseconds within) {
  std::string all;
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline && all.find("\r\n0\r\n\r\n") == std::string::npos && !c.closed()) {
    if (c.fill(200ms)) {
      all += c.buffered();
      c.clear();
    }
  }
  return all;
}

}  // namespace

TEST_CASE("a stream sends its events, then its final chunk, and frees its slot") {
  Stack stack;
  auto& gw = stack.gateway;
  Raw c(gw.http_port());
  REQUIRE(c.send(
      "GET /v1/debug/ticks?count=5&interval_ms=10&bytes=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const std::string text = read_stream(c, 20s);
  CHECK(text.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(text.find("Content-Type: text/event-stream\r\n") != std::string::npos);
  CHECK(text.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(occurrences(text, "event: tick\n") == 5);
  CHECK(text.find("id: 4\n") != std::string::npos);
  CHECK(text.find("\"pad\":\"xxxxxxxxxx\"") != std::string::npos);
  CHECK(text.find("\r\n0\r\n\r\n") != std::string::npos);
  CHECK(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 0; }, 10s));
}

TEST_CASE("bad stream parameters are refused with problem+json") {
  Stack stack;
  auto& gw = stack.gateway;
  for (const char* q : {"pace=sometimes", "interval_ms=-1", "count=x", "bytes=1000000",
                        "pace=fixed&interval_ms=0"}) {
    auto r = gw.get(std::string("/v1/debug/ticks?") + q);
    CHECK_MESSAGE(r.status == 400, q);
    CHECK_MESSAGE(r.body["type"] == "urn:doppel:problem:invalid_argument", q);
  }
  CHECK(metric(gw.text("/metrics"), "doppel_http_streams") == 0);
}

TEST_CASE("a client that leaves frees its stream at once, not at the next event") {
  Stack stack;
  auto& gw = stack.gateway;
  {
    Raw c(gw.http_port());
    // One event a minute: only noticing the closed connection ends this stream in time.
    REQUIRE(c.send("GET /v1/debug/ticks?interval_ms=60000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    CHECK(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 1; }, 10s));
  }
  CHECK(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 0; }, 10s));
}

TEST_CASE("stopping the server ends open streams cleanly, then exits") {
  Stack stack;
  auto& gw = stack.gateway;
  Raw c(gw.http_port());
  REQUIRE(c.send("GET /v1/debug/ticks?interval_ms=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  REQUIRE(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 1; }, 10s));
  CHECK(gw.stop() == 0);
  const std::string text = read_stream(c, 10s);
  CHECK(text.find("\r\n0\r\n\r\n") != std::string::npos);  // the final chunk, not a cut
  while (!c.closed() && c.fill(5s)) {
  }
  CHECK(c.closed());
}
