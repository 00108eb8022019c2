// The HTTP front end under hostile and heavy clients: header and body limits (431, 413 without
// reading the body), slowloris closed at the header timeout, idle sockets that cannot starve the
// API, thousands of idle connections, the per-address limit, pipelining in order, and routing on
// the raw path, and streams whose slow readers are cut off at their bound (or waited for, at the
// client's pace). Waits are bounded far above the normal figures: they detect hangs, not speed.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>

#include "simulator/process.h"
#include "tests/support/harness.h"
#include "tests/support/raw_http.h"

using namespace doppel::testing;
using Clock = std::chrono::steady_clock;

namespace {}  // namespace

TEST_CASE("oversized headers get 431 and do not inflate memory") {
  Stack stack;
  auto& gw = stack.gateway;
  const long rss0 = doppel::sim::rss_kib(gw.pid());
  {  // Too many bytes: 28 MB of headers is cut off after 16 KiB.
    Raw c(gw.http_port());
    REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    std::string batch;
    for (int i = 0; i < 64; ++i) batch += "X-Filler: " + std::string(1000, 'a') + "\r\n";
    // 28 MB in 64 KB batches, until the server has answered.
    for (int i = 0; i < 440 && !c.readable() && c.send(batch); ++i) {
    }
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 431);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:headers_too_large");
  }
  {  // Too many fields, each small.
    Raw c(gw.http_port());
    std::string req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int i = 0; i < 150; ++i) req += "X-" + std::to_string(i) + ": 1\r\n";
    REQUIRE(c.send(req + "\r\n"));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 431);
    CHECK(body_of(r)["detail"].get<std::string>().find("151 header fields") != std::string::npos);
  }
  CHECK(doppel::sim::rss_kib(gw.pid()) - rss0 < 20 * 1024);  // 28 MB never held
  CHECK(metric(gw.text("/metrics"), "doppel_http_refused_total{reason=\"headers_too_large\"}") ==
        2);
}

TEST_CASE("bodies over the limit get 413 without being read, chunked or not") {
  Stack stack;
  auto& gw = stack.gateway;
  {  // Content-Length says 64 MiB: refused on the headers alone.
    Raw c(gw.http_port());
    REQUIRE(
        c.send("PATCH /v1/twins/b-1/desired HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               "application/json\r\nContent-Length: 67108864\r\n\r\n"));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 413);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:too_large");
  }
  {  // Chunked: refused once 1 MiB has arrived, not after the client sent all 64 MiB.
    Raw c(gw.http_port());
    c.set_send_buffer(64 * 1024);
    REQUIRE(
        c.send("PATCH /v1/twins/b-1/desired HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               "application/json\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string chunk = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";  // 64 KiB
    int sent = 0;
    while (sent < 1024 && !c.readable() && c.send(chunk)) ++sent;  // up to 64 MiB, until answered
    CHECK(sent < 256);  // answered long before the 64 MiB were sent (socket buffers hold a few)
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 413);
  }
  CHECK(gw.get("/v1/twins/b-1").status == 404);  // nothing was applied
  CHECK(gw.get("/healthz").status == 200);
}

TEST_CASE("a slowloris client is closed at the header timeout while the API stays fast") {
  Stack stack({"--http-header-timeout-s", "2"});
  auto& gw = stack.gateway;
  Raw slow(gw.http_port());
  REQUIRE(slow.connected());
  const auto t0 = Clock::now();
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: abcdefghijklmnop";
  bool cut = false;
  for (size_t i = 0; i < req.size() && !cut; ++i) {
    if (!slow.send(req.substr(i, 1))) break;
    // Meanwhile the API answers at once (bounded far above its normal sub-millisecond time).
    const auto q0 = Clock::now();
    CHECK(gw.get("/healthz").status == 200);
    CHECK(Clock::now() - q0 < 2s);
    if (slow.fill(1s) || slow.closed()) {
      cut = true;
      CHECK(status_of(slow.response(5s)) == 408);
    }
  }
  CHECK(cut);
  CHECK(Clock::now() - t0 < 20s);  // closed near the 2 s timeout, long before the 30 s it dribbles
}

TEST_CASE("idle sockets cannot starve the API: 64 clients x 2 PATCHes with 32 idle open") {
  Stack stack;
  auto& gw = stack.gateway;
  std::vector<Raw> idle;
  for (int i = 0; i < 32; ++i) idle.emplace_back(gw.http_port());
  std::atomic<int> answered{0};
  std::atomic<int64_t> slowest_ms{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 64; ++c) {
    clients.emplace_back([&, c] {
      for (int k = 0; k < 2; ++k) {
        const auto t0 = Clock::now();
        auto r = gw.patch_desired("starve-" + std::to_string(c), {{"k", k}});
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
        int64_t cur = slowest_ms.load();
        while (ms > cur && !slowest_ms.compare_exchange_weak(cur, ms)) {
        }
        if (r.status == 200) answered.fetch_add(1);
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(answered.load() == 128);
  CHECK(slowest_ms.load() < 2000);
}

TEST_CASE("5000 idle connections are accepted and the API still answers") {
  raise_fd_limit();
  Stack stack;
  auto& gw = stack.gateway;
  std::vector<Raw> idle;
  idle.reserve(5000);
  // From ten client addresses, 500 each: under the per-address limit (1000).
  std::vector<std::string> sources;
  for (int n = 1; n <= 10; ++n) sources.push_back("127.0.0." + std::to_string(n));
  for (int i = 0; i < 5000; ++i) {
    idle.emplace_back(gw.http_port(), sources[static_cast<size_t>(i) % 10].c_str());
    REQUIRE(idle.back().connected());
  }
  REQUIRE(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_connections") >= 5000; },
                     20s));
  CHECK(gw.patch_desired("busy-1", {{"a", 1}}).status == 200);
  CHECK(gw.get("/v1/twins/busy-1").status == 200);
  // Still idle and open: a request on one of them is answered.
  REQUIRE(idle[4321].send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  CHECK(status_of(idle[4321].response(10s)) == 200);
}

TEST_CASE("one address cannot hold every slot: over the per-address limit, 503 problem+json") {
  Stack stack({"--http-max-connections-per-ip", "10"});
  auto& gw = stack.gateway;
  std::vector<Raw> held;
  for (int i = 0; i < 10; ++i) {
    held.emplace_back(gw.http_port());
    // Answered, so accepted and counted.
    REQUIRE(held.back().send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    REQUIRE(status_of(held.back().response(10s)) == 200);
  }
  Raw extra(gw.http_port());
  const std::string r = extra.response(10s);
  CHECK(status_of(r) == 503);
  CHECK(body_of(r)["detail"].get<std::string>().find("this address") != std::string::npos);
  held.clear();  // freed slots are usable again
  CHECK(eventually([&] { return gw.get("/healthz").status == 200; }, 10s));
}

TEST_CASE("pipelined requests are answered in order; the raw path is routed, then decoded") {
  Stack stack;
  auto& gw = stack.gateway;
  REQUIRE(gw.patch_desired("p-1", {{"n", 1}}).status == 200);
  Raw c(gw.http_port());
  REQUIRE(
      c.send("GET /v1/twins/p-1/desired HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
             "GET /v1/twins/nobody HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
             "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const std::string first = c.response(10s);
  const std::string second = c.response(10s);
  const std::string third = c.response(10s);
  CHECK(status_of(first) == 200);
  CHECK(body_of(first) == json{{"n", 1}});
  CHECK(status_of(second) == 404);
  CHECK(status_of(third) == 200);
  // %2F inside an id is part of the id (invalid), not a path separator.
  auto bad = gw.get("/v1/twins/bad%2Fid");
  CHECK(bad.status == 400);
  CHECK(bad.body["type"] == "urn:doppel:problem:invalid_id");
}

namespace {

// The tick ids ("id: N") in an event stream's text, in order.
std::vector<long> tick_ids(const std::string& text) {
  std::vector<long> ids;
  for (size_t at = text.find("\nid: "); at != std::string::npos; at = text.find("\nid: ", at + 1)) {
    ids.push_back(std::stol(text.substr(at + 5)));
  }
  return ids;
}

}  // namespace

TEST_CASE("a slow stream reader is cut off at its bound while a fast one keeps receiving") {
  Stack stack({"--http-stream-buffer-bytes", "65536"});
  auto& gw = stack.gateway;
  // 4 KiB ticks every millisecond, whatever the reader does: ~4 MB/s.
  const std::string request =
      "GET /v1/debug/ticks?pace=fixed&interval_ms=1&bytes=4096 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  Raw slow(gw.http_port(), nullptr, 4096);  // a small window, and it never reads
  REQUIRE(slow.connected());
  REQUIRE(slow.send(request));
  std::atomic<bool> stop{false};
  std::atomic<size_t> fast_bytes{0};
  std::atomic<bool> fast_closed{false};
  std::thread fast([&] {
    Raw c(gw.http_port());
    if (!c.send(request)) return;
    while (!stop.load() && !c.closed()) {
      if (c.fill(100ms)) {
        fast_bytes = fast_bytes.load() + c.buffered().size();
        c.clear();
      }
    }
    fast_closed = c.closed();
  });
  // Cut off within a bound far above the ~20 ms it takes to queue 64 KiB at this rate.
  CHECK(eventually(
      [&] {
        return metric(gw.text("/metrics"),
                      "doppel_http_refused_total{reason=\"stream_too_slow\"}") == 1;
      },
      30s));
  // Meanwhile the API answers, and the fast reader goes on receiving after the cut.
  const auto t0 = Clock::now();
  CHECK(gw.get("/healthz").status == 200);
  CHECK(Clock::now() - t0 < 2s);
  const size_t before = fast_bytes.load();
  CHECK(eventually([&] { return fast_bytes.load() > before + (1 << 20); }, 30s));
  stop = true;
  fast.join();
  CHECK(!fast_closed.load());
  CHECK(metric(gw.text("/metrics"), "doppel_http_refused_total{reason=\"stream_too_slow\"}") == 1);
  // The slow reader finds what fitted in its window, then the end of the connection.
  while (!slow.closed() && slow.fill(10s)) {
  }
  CHECK(slow.closed());
  CHECK(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 0; }, 10s));
}

TEST_CASE("a stream at the client's pace waits for a slow reader and misses nothing") {
  Stack stack({"--http-stream-buffer-bytes", "65536"});
  auto& gw = stack.gateway;
  Raw slow(gw.http_port(), nullptr, 4096);
  REQUIRE(
      slow.send("GET /v1/debug/ticks?pace=client&interval_ms=0&count=2000&bytes=4096 HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n\r\n"));
  // Not reading for a while: the producer waits for the client instead of queueing without end.
  CHECK(!eventually(
      [&] {
        return metric(gw.text("/metrics"),
                      "doppel_http_refused_total{reason=\"stream_too_slow\"}") > 0;
      },
      2s));
  // Then reading it all: every tick, in order, and the end of the stream.
  std::string all;
  const auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline && all.find("\r\n0\r\n\r\n") == std::string::npos) {
    if (slow.fill(1s)) {
      all += slow.buffered();
      slow.clear();
    }
    if (slow.closed()) break;
  }
  const auto ids = tick_ids(all);
  REQUIRE(ids.size() == 2000);
  for (size_t i = 0; i < ids.size(); ++i) REQUIRE(ids[i] == static_cast<long>(i));
  CHECK(all.find("\r\n0\r\n\r\n") != std::string::npos);
  CHECK(metric(gw.text("/metrics"), "doppel_http_refused_total{reason=\"stream_too_slow\"}") == 0);
}
