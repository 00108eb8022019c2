// The HTTP front end under hostile and heavy clients: header and body limits (431, 413 without
// reading the body), slowloris closed at the header timeout, idle sockets that cannot starve the
// API, thousands of idle connections, the per-address limit, pipelining in order, and routing on
// the raw path. Waits are bounded far above the normal figures: they detect hangs, not speed.
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

using namespace doppel::testing;
using Clock = std::chrono::steady_clock;

namespace {

// A raw TCP client: for requests no HTTP library would send.
class Raw {
 public:
  // `source`: the local address to connect from (127.0.0.N are all this machine).
  explicit Raw(int port, const char* source = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (source != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, source, &local.sin_addr);
      ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(Raw&& o) noexcept : fd_(o.fd_), connected_(o.connected_) { o.fd_ = -1; }
  bool connected() const { return connected_; }
  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Receives what is there within `timeout` (at most up to `bytes` more) into the buffer; returns
  // whether anything arrived. Notes when the peer closed.
  bool fill(std::chrono::milliseconds timeout, size_t bytes = 1 << 20) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    std::string chunk(std::min<size_t>(bytes, 65536), '\0');
    const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    buf_.append(chunk.data(), static_cast<size_t>(n));
    return true;
  }
  // Whether the server has said something (or closed) already, without waiting.
  bool readable() {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  // The next whole response (headers and a Content-Length body), or what arrived before the
  // peer closed or `timeout` passed.
  std::string response(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const size_t end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t cl = buf_.find("Content-Length: ");
        const size_t len =
            cl == std::string::npos || cl > end ? 0 : std::stoul(buf_.substr(cl + 16));
        if (buf_.size() >= end + 4 + len) {
          std::string r = buf_.substr(0, end + 4 + len);
          buf_.erase(0, end + 4 + len);
          return r;
        }
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (closed_ || left.count() <= 0) return std::exchange(buf_, {});
      fill(left);
    }
  }
  bool closed() const { return closed_; }
  void set_send_buffer(int bytes) {
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buf_;
};

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(response.substr(9, 3)) : 0;
}

json body_of(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? json() : json::parse(response.substr(end + 4), nullptr, false);
}

void raise_fd_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

}  // namespace

TEST_CASE("oversized headers get 431 and do not inflate memory") {
  Stack stack;
  auto& gw = stack.gateway;
  const long rss0 = doppel::sim::rss_kib(gw.pid());
  {  // Too many bytes: 28 MB of headers is cut off after 16 KiB.
    Raw c(gw.http_port());
    REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
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
    std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
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
        c.send("PATCH /v1/twins/b-1/desired HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nContent-Length: 67108864\r\n\r\n"));
    const std::string r = c.response(10s);
    CHECK(status_of(r) == 413);
    CHECK(body_of(r)["type"] == "urn:doppel:problem:too_large");
  }
  {  // Chunked: refused once 1 MiB has arrived, not after the client sent all 64 MiB.
    Raw c(gw.http_port());
    c.set_send_buffer(64 * 1024);
    REQUIRE(
        c.send("PATCH /v1/twins/b-1/desired HTTP/1.1\r\nHost: x\r\nContent-Type: "
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
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnop";
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
  REQUIRE(idle[4321].send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(status_of(idle[4321].response(10s)) == 200);
}

TEST_CASE("one address cannot hold every slot: over the per-address limit, 503 problem+json") {
  Stack stack({"--http-max-connections-per-ip", "10"});
  auto& gw = stack.gateway;
  std::vector<Raw> held;
  for (int i = 0; i < 10; ++i) {
    held.emplace_back(gw.http_port());
    // Answered, so accepted and counted.
    REQUIRE(held.back().send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
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
      c.send("GET /v1/twins/p-1/desired HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /v1/twins/nobody HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
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
