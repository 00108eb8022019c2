// What the HTTP server's parts share (http_server.cc, detail/http_session.cc): Beast and Asio
// aliases, why a connection or request is refused, the connection's byte stream (Transport), and
// the server's state (HttpServer::Impl): limits and their accounting, metrics, the sessions the
// deadline sweep looks at, the blocking pools and the io_context. For the HTTP server's own
// files only: it is the one place besides them that includes Beast and Asio.
//
// Thread-safety: Impl's counters are atomics; its maps and the session set are under `mu`.
#pragma once

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gateway/http_server.h"

namespace doppel::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Why a connection or request was refused, for doppel_http_refused_total{reason}.
enum class Refusal {
  kMaxConnections,
  kMaxConnectionsPerIp,
  kHeaderTimeout,
  kBodyTimeout,
  kHeadersTooLarge,
  kBodyTooLarge,
  kMalformed,
  kStreamTooSlow,
  kTlsHandshake,
  kMaxStreams,
  kMaxStreamsPerIp,
  kCount
};
constexpr const char* kRefusalNames[] = {
    "max_connections", "max_connections_per_ip", "header_timeout",
    "body_timeout",    "headers_too_large",      "body_too_large",
    "malformed",       "stream_too_slow",        "tls_handshake",
    "max_streams",     "max_streams_per_ip"};
static_assert(sizeof(kRefusalNames) / sizeof(kRefusalNames[0]) ==
              static_cast<size_t>(Refusal::kCount));

class Session;  // one connection (detail/http_session.cc)

// The connection's byte stream: a TCP socket, or TLS over it. Beast's algorithms see one
// AsyncStream either way.
class Transport {
 public:
  using executor_type = tcp::socket::executor_type;

  Transport(tcp::socket socket, asio::ssl::context* tls) : socket_(std::move(socket)) {
    if (tls != nullptr) tls_.emplace(socket_, *tls);
  }
  executor_type get_executor() { return socket_.get_executor(); }
  tcp::socket& socket() { return socket_; }
  bool tls() const { return tls_.has_value(); }

  template <class Buffers, class Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }
  template <class Buffers, class Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
    }
  }
  template <class Handler>
  void async_handshake(Handler&& handler) {
    tls_->async_handshake(asio::ssl::stream_base::server, std::forward<Handler>(handler));
  }
  template <class Handler>
  void async_shutdown(Handler&& handler) {
    tls_->async_shutdown(std::forward<Handler>(handler));
  }

 private:
  tcp::socket socket_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(HttpServerOptions o, Handler h, Metrics& m)
      : options(std::move(o)),
        handler(std::move(h)),
        blocking(static_cast<size_t>(std::max(1, options.blocking_threads))),
        query_pool(static_cast<size_t>(std::max(1, options.query_threads))),
        acceptor(ioc),
        sweeper(ioc) {
    for (size_t i = 0; i < static_cast<size_t>(Refusal::kCount); ++i) {
      refused[i] = &m.counter("doppel_http_refused_total",
                              "Connections and requests refused by the HTTP front end, by reason",
                              std::string("reason=\"") + kRefusalNames[i] + "\"");
    }
    for (int c = 1; c <= 5; ++c) {
      responses[c] = &m.counter("doppel_http_responses_total", "HTTP responses by status class",
                                "class=\"" + std::to_string(c) + "xx\"");
    }
    latency = &m.histogram("doppel_http_request_seconds", "HTTP request latency",
                           {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5});
    m.gauge_fn("doppel_http_connections", "Open HTTP connections",
               [this] { return static_cast<double>(open.load()); });
    m.gauge_fn("doppel_http_streams", "Open streaming HTTP responses",
               [this] { return static_cast<double>(streams.load()); });
  }

  // Accepts connections, each a Session (detail/http_session.cc), or refuses them.
  void accept();
  // Closes the connections that wait for a request (shutdown); the others close after answering.
  void close_idle_sessions();
  // Every connection's current time limit is a deadline, checked here a few times a second: one
  // timer for the server instead of one per connection (idle connections then cost no timer).
  void sweep();
  void refuse(Refusal why) { refused[static_cast<size_t>(why)]->inc(); }
  // A place for `ip` among `total` (at most max_total) and its own (at most max_per_ip), or
  // which limit refused it. Under mu.
  static std::optional<Refusal> take_place(std::atomic<size_t>& total,
                                           std::unordered_map<std::string, size_t>& by_ip,
                                           const std::string& ip, size_t max_total,
                                           size_t max_per_ip, Refusal over_total,
                                           Refusal over_per_ip) {
    if (total.load() >= max_total) return over_total;
    size_t& n = by_ip[ip];
    if (n >= max_per_ip) return over_per_ip;
    ++n;
    total.fetch_add(1);
    return std::nullopt;
  }
  static void give_back_place(std::atomic<size_t>& total,
                              std::unordered_map<std::string, size_t>& by_ip,
                              const std::string& ip) {
    if (auto it = by_ip.find(ip); it != by_ip.end() && --it->second == 0) by_ip.erase(it);
    total.fetch_sub(1);
  }
  // Admits a connection from `ip`, or says why not.
  std::optional<Refusal> admit(const std::string& ip) {
    std::lock_guard lock(mu);
    return take_place(open, per_ip, ip, options.max_connections, options.max_connections_per_ip,
                      Refusal::kMaxConnections, Refusal::kMaxConnectionsPerIp);
  }
  // Admits a stream (an SSE response) for `ip`, or says why not.
  std::optional<Refusal> admit_stream(const std::string& ip) {
    std::lock_guard lock(mu);
    return take_place(streams, streams_per_ip, ip, options.max_streams, options.max_streams_per_ip,
                      Refusal::kMaxStreams, Refusal::kMaxStreamsPerIp);
  }
  void release_stream(const std::string& ip) {
    std::lock_guard lock(mu);
    give_back_place(streams, streams_per_ip, ip);
  }
  void release(const std::string& ip) {
    std::lock_guard lock(mu);
    give_back_place(open, per_ip, ip);
    drained.notify_all();
  }

  HttpServerOptions options;
  Handler handler;
  Counter* refused[static_cast<size_t>(Refusal::kCount)] = {};
  Counter* responses[6] = {};
  Histogram* latency = nullptr;
  std::atomic<size_t> open{0};
  std::atomic<size_t> streams{0};
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable drained;
  std::unordered_map<std::string, size_t> per_ip;          // under mu
  std::unordered_map<std::string, size_t> streams_per_ip;  // under mu
  std::unordered_set<std::shared_ptr<Session>> sessions;   // under mu: deadlines and shutdown
  int bound_port = -1;
  std::chrono::milliseconds sweep_every{100};
  std::unique_ptr<asio::ssl::context> tls;  // HTTPS: set by start()
  asio::thread_pool blocking;
  asio::thread_pool query_pool;  // fleet scans, apart so they never delay the feed or history
  // Last: destroyed first, with the handlers it still holds, while the rest is alive.
  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer sweeper;
  std::vector<std::thread> threads;
};

}  // namespace doppel::gateway
