#include "gateway/http_server.h"

#include <sys/resource.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "twins/document.h"
#include "twins/log.h"

namespace doppel::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::string reason_phrase(int status) {
  const auto r = http::obsolete_reason(static_cast<http::status>(status));
  return r.empty() ? std::string("Error") : std::string(r);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

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

}  // namespace

const char* stream_end_name(StreamEnd why) {
  switch (why) {
    case StreamEnd::kEnded:
      return "ended";
    case StreamEnd::kClientGone:
      return "client_gone";
    case StreamEnd::kTooSlow:
      return "too_slow";
    case StreamEnd::kShutdown:
      return "shutdown";
  }
  return "?";
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

class Session;

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

  void accept();
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

// The shared state of one streaming response: what the producer queued and has not been sent,
// and its callbacks. The producer's side (HttpStream) locks `mu_`; the connection's side runs on
// the connection's strand.
class StreamState final : public HttpStream {
 public:
  StreamState(std::weak_ptr<Session> session, std::weak_ptr<HttpServer::Impl> server, size_t bound)
      : session_(std::move(session)), server_(std::move(server)), bound_(bound) {}

  bool write(std::string data) override;
  size_t room() const override {
    std::lock_guard lock(mu_);
    return over_ || ending_ ? 0 : bound_ - std::min(unsent_, bound_);
  }
  void on_drain(std::function<void()> then) override;
  void after(std::chrono::milliseconds delay, std::function<void()> then) override;
  void on_close(std::function<void(StreamEnd)> then) override {
    std::unique_lock lock(mu_);
    if (!finished_) {
      on_close_ = std::move(then);
      return;
    }
    const StreamEnd why = why_;
    lock.unlock();
    then(why);
  }
  void end() override { begin_end(StreamEnd::kEnded); }
  bool closed() const override {
    std::lock_guard lock(mu_);
    return over_ || ending_;
  }

  // ---- the connection's side (its strand) ----

  // Stops accepting writes; the connection sends what is queued, then the final chunk.
  void begin_end(StreamEnd why);
  // What to send next: the queued chunks, framed (empty: nothing queued). `last` is set when
  // the stream is ending and everything has been sent; `drained` gets the drain callbacks when
  // nothing is left to send.
  std::string take(size_t& data_bytes, bool& last, std::vector<std::function<void()>>& drained) {
    std::lock_guard lock(mu_);
    std::string out;
    data_bytes = 0;
    for (auto& piece : pending_) {
      if (piece.empty()) continue;  // an empty chunk would end the stream
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      out += size;
      out += piece;
      out += "\r\n";
      data_bytes += piece.size();
    }
    pending_.clear();
    if (out.empty() && unsent_ == 0) {
      if (ending_ && !over_) last = true;
      drained.swap(drain_);
    }
    return out;
  }
  void sent(size_t data_bytes) {
    std::lock_guard lock(mu_);
    unsent_ -= std::min(unsent_, data_bytes);
  }
  StreamEnd ending_reason() const {
    std::lock_guard lock(mu_);
    return ending_why_;
  }
  // Ends the stream: refuses further writes, drops pending callbacks and runs on_close once.
  // true the first time.
  bool finish(StreamEnd why, bool cancel_timers = true) {
    std::function<void(StreamEnd)> on_close;
    std::vector<std::function<void()>> drop;
    {
      std::lock_guard lock(mu_);
      if (finished_) return false;
      finished_ = true;
      over_ = true;
      why_ = why;
      on_close.swap(on_close_);
      drop.swap(drain_);
      pending_.clear();
    }
    if (cancel_timers) {
      for (auto& weak : timers_) {
        if (auto t = weak.lock()) t->cancel();
      }
    }
    timers_.clear();
    if (on_close) on_close(why);
    return true;
  }
  // The producer's pending after() timers (owned by their waits in the io_context).
  std::vector<std::weak_ptr<asio::steady_timer>>& timers() { return timers_; }

 private:
  // Runs `f` on the connection's strand, if the connection (and server) still exist.
  template <class F>
  void on_strand(F f);

  const std::weak_ptr<Session> session_;
  const std::weak_ptr<HttpServer::Impl> server_;
  const size_t bound_;
  mutable std::mutex mu_;
  std::vector<std::string> pending_;          // under mu_
  size_t unsent_ = 0;                         // under mu_: queued and not yet written, bytes
  bool ending_ = false;                       // under mu_: end() called, or shutdown
  StreamEnd ending_why_ = StreamEnd::kEnded;  // under mu_
  bool over_ = false;                         // under mu_: no more writes, ever
  bool finished_ = false;                     // under mu_: on_close has run (or is running)
  StreamEnd why_ = StreamEnd::kEnded;         // under mu_
  std::vector<std::function<void()>> drain_;  // under mu_
  std::function<void(StreamEnd)> on_close_;   // under mu_
  std::vector<std::weak_ptr<asio::steady_timer>> timers_;  // strand only
};

// One connection: reads a request, hands it to the handler, writes the answer, reads the next.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server, std::string ip)
      : transport_(std::move(socket), server.tls.get()), server_(server), ip_(std::move(ip)) {}

  ~Session() {
    // Breaks the producer's references (its timers go with the io_context, not touched here).
    if (stream_ && stream_->finish(StreamEnd::kShutdown, false)) server_.release_stream(ip_);
    server_.release(ip_);
  }

  Transport::executor_type executor() { return transport_.get_executor(); }

  void start() {
    if (!transport_.tls()) return read_header();
    arm(o().header_timeout);
    transport_.async_handshake([self = shared_from_this()](beast::error_code ec) {
      self->disarm();
      if (ec) {
        self->server_.refuse(Refusal::kTlsHandshake);
        return self->close();
      }
      self->read_header();
    });
  }

  // Shutdown: a connection waiting for a request closes now; one mid-request after its answer;
  // a stream sends what is queued and its final chunk, then closes.
  void close_if_idle() {
    asio::post(executor(), [self = shared_from_this()] {
      if (self->stream_) return self->stream_->begin_end(StreamEnd::kShutdown);
      if (!self->busy_) self->close();
    });
  }

  // Writes `res` and closes (a refusal before or instead of a request).
  void refuse(HttpResponse res) {
    busy_ = true;
    keep_alive_ = false;
    write(std::move(res));
  }

  // The sweep (under the server's lock): when the current time limit seems to have passed, the
  // connection's strand checks its own deadline (the hint may be stale: re-armed meanwhile).
  void check_deadline(int64_t now_ns) {
    int64_t d = deadline_hint_.load(std::memory_order_relaxed);
    if (d == 0 || d > now_ns) return;
    if (!deadline_hint_.compare_exchange_strong(d, 0)) return;  // disarmed or re-armed meanwhile
    asio::post(executor(), [self = shared_from_this()] {
      if (self->deadline_ == Clock::time_point{} || Clock::now() < self->deadline_) return;
      self->deadline_ = {};
      self->timed_out_ = true;
      beast::error_code ignored;
      self->transport_.socket().cancel(ignored);
    });
  }

  // ---- streaming (strand) ----

  // Sends what the producer queued; at the end, the final chunk.
  void flush() {
    if (closed_ || writing_ || !stream_) return;
    size_t data_bytes = 0;
    bool last = false;
    std::vector<std::function<void()>> drained;
    std::string out = stream_->take(data_bytes, last, drained);
    if (!out.empty()) {
      out_ = std::move(out);
      writing_ = true;
      asio::async_write(transport_, asio::buffer(out_),
                        [self = shared_from_this(), data_bytes](beast::error_code ec, size_t) {
                          self->writing_ = false;
                          if (ec) return self->close();
                          if (self->stream_) self->stream_->sent(data_bytes);
                          self->flush();
                        });
      return;
    }
    if (last) {
      out_ = "0\r\n\r\n";
      writing_ = true;
      asio::async_write(transport_, asio::buffer(out_),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          self->writing_ = false;
                          if (ec) return self->close();
                          self->end_stream(self->stream_->ending_reason());
                          self->linger_close();
                        });
      return;
    }
    for (auto& f : drained) f();
  }

  // The unsent output passed the bound: the client is cut off.
  void cut_off() {
    if (closed_ || !stream_) return;
    server_.refuse(Refusal::kStreamTooSlow);
    log_info("HTTP: cut off a streaming client at " + ip_ + " (more than " +
             std::to_string(o().stream_buffer_bytes) +
             " bytes unsent; --http-stream-buffer-bytes)");
    end_stream(StreamEnd::kTooSlow);
    close();
  }

  void add_timer(std::chrono::milliseconds delay, std::function<void()> then) {
    if (!stream_ || stream_->closed()) return;
    auto timer = std::make_shared<asio::steady_timer>(executor(), delay);
    auto& ts = stream_->timers();
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const auto& w) { return w.expired(); }),
             ts.end());
    ts.push_back(timer);
    timer->async_wait(
        [self = shared_from_this(), timer, then = std::move(then)](beast::error_code ec) {
          if (ec || !self->stream_ || self->stream_->closed()) return;
          then();
        });
  }

  const std::string& ip() const { return ip_; }

 private:
  const HttpServerOptions& o() const { return server_.options; }

  // Limits how long the current read or write may take: past the deadline (the sweep checks),
  // the operation is cancelled — not the connection closed — so a 408 can still be written.
  void arm(std::chrono::milliseconds limit) {
    timed_out_ = false;
    deadline_ = Clock::now() + limit;
    deadline_hint_.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline_.time_since_epoch()).count());
  }
  void disarm() {
    deadline_ = {};
    deadline_hint_.store(0);
  }

  void wait_for_next() {
    if (server_.stopping.load()) return close();
    if (buffer_.size() > 0) return read_header();  // pipelined: already here
    // Idle keep-alive: wait for the first byte under the idle timeout, then the header timeout.
    arm(o().idle_timeout);
    if (transport_.tls()) {
      // Decrypted bytes may already wait inside TLS: read (which also waits), not poll.
      transport_.async_read_some(buffer_.prepare(2048),
                                 [self = shared_from_this()](beast::error_code ec, size_t n) {
                                   self->disarm();
                                   if (ec) return self->close();
                                   self->buffer_.commit(n);
                                   self->read_header();
                                 });
      return;
    }
    transport_.socket().async_wait(tcp::socket::wait_read,
                                   [self = shared_from_this()](beast::error_code ec) {
                                     self->disarm();
                                     if (ec) return self->close();
                                     self->read_header();
                                   });
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(o().max_header_bytes));
    parser_->body_limit(o().max_body_bytes);
    arm(o().header_timeout);
    http::async_read_header(
        transport_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    const bool timed_out = timed_out_;
    disarm();
    if (timed_out && server_.stopping.load()) return close();
    if (timed_out) {
      return refuse(Refusal::kHeaderTimeout, 408, "request_timeout",
                    "the request headers did not arrive within " +
                        std::to_string(o().header_timeout.count() / 1000) + " s");
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == asio::ssl::error::stream_truncated) {
      return close();
    }
    if (ec == http::error::header_limit) {
      return refuse(
          Refusal::kHeadersTooLarge, 431, "headers_too_large",
          "the request headers exceed " + std::to_string(o().max_header_bytes) + " bytes in total");
    }
    if (ec == http::error::body_limit) {
      return refuse(Refusal::kBodyTooLarge, 413, "too_large",
                    "the request body exceeds " + std::to_string(o().max_body_bytes) + " bytes");
    }
    if (ec) {
      return refuse(Refusal::kMalformed, 400, "malformed",
                    "malformed HTTP request: " + ec.message());
    }
    size_t count = 0;
    for (auto it = parser_->get().begin(); it != parser_->get().end(); ++it) ++count;
    if (count > o().max_header_count) {
      return refuse(Refusal::kHeadersTooLarge, 431, "headers_too_large",
                    "the request has " + std::to_string(count) + " header fields; at most " +
                        std::to_string(o().max_header_count) + " are accepted");
    }
    if (auto refusal = framing_problem(parser_->get())) return refuse(std::move(*refusal));
    busy_ = true;
    if (parser_->is_done()) return dispatch();
    if (expects_continue(parser_->get())) {
      // RFC 9110 §10.1.1: the client waits for this before it sends the body.
      out_ = "HTTP/1.1 100 Continue\r\n\r\n";
      arm(o().body_timeout);
      asio::async_write(transport_, asio::buffer(out_),
                        [self = shared_from_this()](beast::error_code ec2, size_t) {
                          self->disarm();
                          if (ec2) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    arm(o().body_timeout);
    http::async_read(
        transport_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec2, size_t) { self->on_body(ec2); });
  }

  static bool expects_continue(const http::request<http::string_body>& msg) {
    return beast::iequals(msg[http::field::expect], "100-continue");
  }

  // Framing that RFC 9112 requires a server to refuse — and then to close the connection, as a
  // refusal does — since it cannot know where this request ends and the next begins: a
  // Transfer-Encoding that does not end in a single chunked (400), a coding other than chunked
  // (501: not implemented here), both Transfer-Encoding and Content-Length; an HTTP/1.1 request
  // without exactly one Host; an Expect other than 100-continue (417).
  std::optional<HttpResponse> framing_problem(const http::request<http::string_body>& msg) {
    size_t hosts = 0;
    size_t transfer_encodings = 0;
    std::string codings;
    for (const auto& f : msg) {
      if (f.name() == http::field::host) ++hosts;
      if (f.name() == http::field::transfer_encoding) {
        ++transfer_encodings;
        codings += (codings.empty() ? "" : ",") + std::string(f.value());
      }
    }
    auto refused = [&](int status, std::string_view code, const std::string& detail) {
      server_.refuse(Refusal::kMalformed);
      return problem_response(status, code, detail);
    };
    if (transfer_encodings > 0) {
      std::vector<std::string> list;
      std::string_view rest = codings;
      while (true) {
        const size_t comma = rest.find(',');
        std::string c(rest.substr(0, comma));
        c.erase(0, c.find_first_not_of(" \t"));
        c.erase(c.find_last_not_of(" \t") + 1);
        for (char& ch : c) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (!c.empty()) list.push_back(c);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      if (list.empty() || list.back() != "chunked" ||
          std::count(list.begin(), list.end(), "chunked") != 1) {
        return refused(400, "malformed",
                       "Transfer-Encoding '" + codings +
                           "' does not end in a single chunked coding; the request's end "
                           "cannot be known (RFC 9112 section 6.1), so the connection closes");
      }
      if (list.size() > 1) {
        return refused(501, "not_implemented",
                       "Transfer-Encoding '" + codings +
                           "': doppeld implements only the chunked transfer coding; send the "
                           "body without other codings");
      }
      if (msg.find(http::field::content_length) != msg.end()) {
        return refused(400, "malformed",
                       "a request with both Transfer-Encoding and Content-Length is ambiguous "
                       "(RFC 9112 section 6.3); send one");
      }
    }
    if (msg.version() >= 11 && hosts != 1) {
      return refused(400, "malformed",
                     hosts == 0 ? "an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)"
                                : "the request has " + std::to_string(hosts) +
                                      " Host headers; exactly one is allowed");
    }
    if (msg.find(http::field::expect) != msg.end() && !expects_continue(msg)) {
      return refused(417, "expectation_failed",
                     "Expect: '" + std::string(msg[http::field::expect]) +
                         "' is not supported; only 100-continue is");
    }
    return std::nullopt;
  }

  void on_body(beast::error_code ec) {
    const bool timed_out = timed_out_;
    disarm();
    if (timed_out) {
      return refuse(Refusal::kBodyTimeout, 408, "request_timeout",
                    "the request body did not arrive within " +
                        std::to_string(o().body_timeout.count() / 1000) + " s");
    }
    if (ec == http::error::body_limit) {
      return refuse(Refusal::kBodyTooLarge, 413, "too_large",
                    "the request body exceeds " + std::to_string(o().max_body_bytes) + " bytes");
    }
    if (ec) return close();
    dispatch();
  }

  void dispatch() {
    auto& msg = parser_->get();
    keep_alive_ = msg.keep_alive() && !server_.stopping.load();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    // Absolute form (RFC 9112 §3.2.2: a server must accept it): the path and query that follow
    // the authority; the authority itself is not used for routing.
    for (std::string_view scheme : {"http://", "https://"}) {
      if (req.target.size() > scheme.size() &&
          beast::iequals(std::string_view(req.target).substr(0, scheme.size()), scheme)) {
        const size_t path = req.target.find_first_of("/?", scheme.size());
        req.target = path == std::string::npos ? "/"
                     : req.target[path] == '?' ? "/" + req.target.substr(path)
                                               : req.target.substr(path);
        break;
      }
    }
    head_ = req.method == "HEAD";
    const size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& f : msg) req.headers.emplace_back(f.name_string(), f.value());
    req.body = std::move(msg.body());
    req.peer = ip_;
    parser_.reset();
    started_ = Clock::now();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    std::weak_ptr<Session> weak = shared_from_this();
    auto owner = server_.shared_from_this();  // keeps the io_context alive for late answers
    server_.handler(std::move(req), [weak, owner, answered](HttpResponse res) {
      if (answered->exchange(true)) return;  // exactly once
      if (auto self = weak.lock()) {
        asio::post(self->executor(),
                   [self, res = std::move(res)]() mutable { self->write(std::move(res)); });
      }
    });
  }

  void refuse(Refusal why, int status, std::string_view code, const std::string& detail) {
    server_.refuse(why);
    refuse(problem_response(status, code, detail));
  }

  void count(int status) {
    const int cls = status / 100;
    if (cls >= 1 && cls <= 5) server_.responses[cls]->inc();
    if (started_) {
      server_.latency->observe(std::chrono::duration<double>(Clock::now() - *started_).count());
      started_.reset();
    }
  }

  void write(HttpResponse res) {
    if (closed_) return;
    count(res.status);
    if (head_) return write_head(std::move(res));
    if (res.stream) return start_stream(std::move(res));
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "doppeld");
    for (auto& [k, v] : res.headers) out->set(k, v);
    if (!res.content_type.empty()) out->set(http::field::content_type, res.content_type);
    out->body() = std::move(res.body);
    out->keep_alive(keep_alive_);
    out->prepare_payload();
    arm(o().body_timeout);  // a client that does not read its answer
    http::async_write(transport_, *out,
                      [self = shared_from_this(), out](beast::error_code ec, size_t) {
                        self->disarm();
                        self->busy_ = false;
                        if (ec) return self->close();
                        if (!self->keep_alive_) return self->linger_close();
                        self->wait_for_next();
                      });
  }

  // The answer to HEAD: the headers a GET would get, no body (a stream is not started).
  void write_head(HttpResponse res) {
    head_ = false;
    auto out = std::make_shared<http::response<http::empty_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "doppeld");
    for (auto& [k, v] : res.headers) out->set(k, v);
    if (!res.content_type.empty()) out->set(http::field::content_type, res.content_type);
    if (res.stream) {
      out->set(http::field::cache_control, "no-store");
    } else {
      out->content_length(res.body.size());
    }
    out->keep_alive(keep_alive_ && !res.stream);
    if (res.stream) keep_alive_ = false;
    auto sr = std::make_shared<http::response_serializer<http::empty_body>>(*out);
    arm(o().body_timeout);
    http::async_write_header(transport_, *sr,
                             [self = shared_from_this(), out, sr](beast::error_code ec, size_t) {
                               self->disarm();
                               self->busy_ = false;
                               if (ec) return self->close();
                               if (!self->keep_alive_) return self->linger_close();
                               self->wait_for_next();
                             });
  }

  // The status line and headers now; the body as the producer writes it, chunk by chunk. The
  // connection closes after the stream (it is long-lived; a client opens another for requests).
  void start_stream(HttpResponse res) {
    if (auto refusal = server_.admit_stream(ip_)) {
      // The producer never runs; the connection stays usable for ordinary requests.
      server_.refuse(*refusal);
      const bool per_ip = *refusal == Refusal::kMaxStreamsPerIp;
      HttpResponse problem =
          problem_response(per_ip ? 429 : 503, per_ip ? "too_many_streams" : "unavailable",
                           per_ip ? "this address has " + std::to_string(o().max_streams_per_ip) +
                                        " streams open (--http-max-streams-per-ip); close one first"
                                  : "the server has " + std::to_string(o().max_streams) +
                                        " streams open (--http-max-streams); retry later");
      problem.headers.emplace_back("Retry-After", "5");
      return write(std::move(problem));
    }
    // The kernel's send queue for a stream is bounded too, not only what waits in user space:
    // without this a client that never reads pins megabytes of kernel memory per connection.
    beast::error_code ignored;
    transport_.socket().set_option(
        asio::socket_base::send_buffer_size(
            static_cast<int>(std::clamp<size_t>(o().stream_buffer_bytes / 2, 4096, 128 * 1024))),
        ignored);
    std::string head = "HTTP/1.1 " + std::to_string(res.status) + " " + reason_phrase(res.status) +
                       "\r\nServer: doppeld\r\n";
    if (!res.content_type.empty()) head += "Content-Type: " + res.content_type + "\r\n";
    for (auto& [k, v] : res.headers) head += k + ": " + v + "\r\n";
    head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    keep_alive_ = false;
    stream_ = std::make_shared<StreamState>(weak_from_this(), server_.weak_from_this(),
                                            o().stream_buffer_bytes);
    out_ = std::move(head);
    writing_ = true;
    asio::async_write(transport_, asio::buffer(out_),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) return self->close();
                        self->flush();
                      });
    watch_client();
    if (server_.stopping.load()) stream_->begin_end(StreamEnd::kShutdown);
    res.stream(stream_);
  }

  // While a stream runs nothing more is expected from the client; a read notices at once when it
  // goes away (rather than at the next write). What it might send is discarded.
  void watch_client() {
    if (!scratch_) scratch_ = std::make_unique<char[]>(kScratch);
    transport_.async_read_some(asio::buffer(scratch_.get(), kScratch),
                               [self = shared_from_this()](beast::error_code ec, size_t) {
                                 if (self->closed_) return;
                                 if (ec) return self->close();
                                 self->watch_client();
                               });
  }

  void end_stream(StreamEnd why) {
    if (stream_ && stream_->finish(why)) server_.release_stream(ip_);
  }

  // Closes after the client has had its answer: stop sending, then discard what it still sends
  // (a refused body) for a while, so that closing with unread data does not reset the
  // connection before the client read the answer. Memory stays at one scratch buffer.
  void linger_close() {
    if (server_.stopping.load() || stream_) return close();
    arm(std::chrono::seconds(2));
    if (transport_.tls()) {
      // close_notify, and the client's in return (or the deadline).
      transport_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close(); });
      return;
    }
    beast::error_code ec;
    transport_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    if (!scratch_) scratch_ = std::make_unique<char[]>(kScratch);
    discard();
  }

  void discard() {
    if (lingered_ > (8u << 20)) return close();
    transport_.socket().async_read_some(
        asio::buffer(scratch_.get(), kScratch),
        [self = shared_from_this()](beast::error_code ec, size_t n) {
          if (ec) return self->close();
          self->lingered_ += n;
          self->discard();
        });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    disarm();
    end_stream(StreamEnd::kClientGone);  // nothing if it already ended
    beast::error_code ec;
    transport_.socket().shutdown(tcp::socket::shutdown_both, ec);
    transport_.socket().close(ec);
    std::shared_ptr<Session> keep;  // dropped outside the lock
    {
      std::lock_guard lock(server_.mu);
      if (auto it = server_.sessions.find(shared_from_this()); it != server_.sessions.end()) {
        keep = *it;
        server_.sessions.erase(it);
      }
    }
    server_.drained.notify_all();
  }

  static constexpr size_t kScratch = 4096;

  Transport transport_;
  HttpServer::Impl& server_;
  std::string ip_;
  Clock::time_point deadline_{};           // the current time limit; {}: none (strand only)
  std::atomic<int64_t> deadline_hint_{0};  // the same in ns, for the sweep; 0: none
  bool timed_out_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<Clock::time_point> started_;
  bool keep_alive_ = true;
  bool head_ = false;  // the request being answered is a HEAD
  bool busy_ = false;
  bool closed_ = false;
  bool writing_ = false;  // streaming: a write is in progress
  std::shared_ptr<StreamState> stream_;
  std::string out_;  // streaming: what is being written
  size_t lingered_ = 0;
  std::unique_ptr<char[]> scratch_;  // only while lingering or streaming
};

template <class F>
void StreamState::on_strand(F f) {
  auto server = server_.lock();  // first: the io_context outlives what follows
  if (!server) return;
  auto session = session_.lock();
  if (!session) return;
  asio::post(session->executor(), [session, f = std::move(f)]() mutable { f(*session); });
}

bool StreamState::write(std::string data) {
  bool cut = false;
  {
    std::lock_guard lock(mu_);
    if (over_ || ending_) return false;
    const bool alone = unsent_ == 0;  // one write larger than the bound is still accepted alone
    unsent_ += data.size();
    if (unsent_ > bound_ && !alone) {
      over_ = true;
      cut = true;
      pending_.clear();
    } else {
      pending_.push_back(std::move(data));
    }
  }
  if (cut) {
    on_strand([](Session& s) { s.cut_off(); });
    return false;
  }
  on_strand([](Session& s) { s.flush(); });
  return true;
}

void StreamState::on_drain(std::function<void()> then) {
  {
    std::lock_guard lock(mu_);
    if (over_ || ending_) return;
    drain_.push_back(std::move(then));
  }
  on_strand([](Session& s) { s.flush(); });
}

void StreamState::after(std::chrono::milliseconds delay, std::function<void()> then) {
  on_strand(
      [delay, then = std::move(then)](Session& s) mutable { s.add_timer(delay, std::move(then)); });
}

void StreamState::begin_end(StreamEnd why) {
  {
    std::lock_guard lock(mu_);
    if (over_ || ending_) return;
    ending_ = true;
    ending_why_ = why;
    drain_.clear();
  }
  on_strand([](Session& s) { s.flush(); });
}

void HttpServer::Impl::accept() {
  // `this` and not a shared_ptr: the io_context that holds this handler is our member, so the
  // handler never outlives us, and a shared_ptr in it would keep us alive forever (a cycle).
  acceptor.async_accept(asio::make_strand(ioc), [self = this](beast::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || self->stopping.load()) return;
    if (!ec) {
      beast::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);  // small answers must not wait for ACKs
      const auto remote = s.remote_endpoint(ignored);
      const std::string ip = ignored ? std::string("?") : remote.address().to_string();
      const auto refusal = self->admit(ip);
      if (!refusal) {
        auto session = std::make_shared<Session>(std::move(s), *self, ip);
        {
          std::lock_guard lock(self->mu);
          self->sessions.insert(session);
        }
        session->start();
      } else {
        // Answered and closed at once, outside the limits' accounting.
        self->refuse(*refusal);
        const bool from_one_ip = *refusal == Refusal::kMaxConnectionsPerIp;
        std::string body = twins::to_text(twins::json{
            {"type", "urn:doppel:problem:unavailable"},
            {"title", "Service Unavailable"},
            {"status", 503},
            {"detail", from_one_ip ? "too many connections from this address; close idle ones"
                                   : "too many open connections; retry later"}});
        std::string out =
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
            "Content-Type: application/problem+json\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
        // (Over TLS there is no handshake yet to answer in: the connection is just closed.)
        if (!self->tls) asio::write(s, asio::buffer(out), ignored);
        s.shutdown(tcp::socket::shutdown_both, ignored);
      }
    } else {
      if (!self->acceptor.is_open()) return;
      // Out of descriptors (EMFILE) or a transient error: try again shortly, without
      // spinning.
      log_warn("HTTP accept failed: " + ec.message() + "; retrying in 100 ms");
      auto timer = std::make_shared<asio::steady_timer>(self->ioc, std::chrono::milliseconds(100));
      timer->async_wait([self, timer](beast::error_code) {
        if (!self->stopping.load()) self->accept();
      });
      return;
    }
    self->accept();
  });
}

void HttpServer::Impl::sweep() {
  sweeper.expires_after(sweep_every);
  // `this`, not a shared_ptr: see accept().
  sweeper.async_wait([self = this](beast::error_code ec) {
    if (ec) return;
    const int64_t now =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count();
    {
      std::lock_guard lock(self->mu);
      for (const auto& s : self->sessions) s->check_deadline(now);
    }
    self->sweep();
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler, Metrics& metrics)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handler), metrics)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  Impl& i = *impl_;
  // Every connection is a descriptor: take as many as this process may.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    log_info("HTTP: open-file limit " + std::to_string(nofile.rlim_cur) +
             ", --http-max-connections " + std::to_string(i.options.max_connections));
    if (nofile.rlim_cur < i.options.max_connections + 256) {
      log_warn("HTTP: the open-file limit (" + std::to_string(nofile.rlim_cur) +
               ") is below --http-max-connections; raise it (ulimit -n) or lower the flag");
    }
  }
  if (i.options.tls_cert.empty() != i.options.tls_key.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--http-tls-cert and --http-tls-key go together (a PEM certificate chain and "
                  "its private key)");
  }
  if (!i.options.tls_cert.empty()) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    beast::error_code tls_ec;
    ctx->use_certificate_chain_file(i.options.tls_cert, tls_ec);
    if (tls_ec) {
      return Status(StatusCode::kInvalidArgument, "cannot use --http-tls-cert " +
                                                      i.options.tls_cert + ": " + tls_ec.message() +
                                                      " (expected PEM)");
    }
    ctx->use_private_key_file(i.options.tls_key, asio::ssl::context::pem, tls_ec);
    if (tls_ec) {
      return Status(StatusCode::kInvalidArgument,
                    "cannot use --http-tls-key " + i.options.tls_key + ": " + tls_ec.message() +
                        " (expected the PEM private key of --http-tls-cert)");
    }
    i.tls = std::move(ctx);
  }
  // Time limits are checked a few times within the shortest of them.
  const auto shortest =
      std::min({i.options.header_timeout, i.options.idle_timeout, i.options.body_timeout});
  i.sweep_every =
      std::clamp(shortest / 8, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
  beast::error_code ec;
  const auto address =
      asio::ip::make_address(i.options.host == "localhost" ? "127.0.0.1" : i.options.host, ec);
  auto fail = [&](const std::string& what) {
    return Status(StatusCode::kUnavailable, "cannot listen for HTTP on " + i.options.host + ":" +
                                                std::to_string(i.options.port) + " (" + what +
                                                "); choose another address with --http");
  };
  if (ec) return fail("not an IP address: " + ec.message());
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(i.options.port));
  i.acceptor.open(endpoint.protocol(), ec);
  if (!ec) i.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) i.acceptor.bind(endpoint, ec);
  if (!ec) i.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec.message());
  i.bound_port = i.acceptor.local_endpoint().port();
  i.accept();
  i.sweep();
  for (int t = 0; t < std::max(1, i.options.threads); ++t) {
    i.threads.emplace_back([&i] { i.ioc.run(); });
  }
  return Status::ok();
}

void HttpServer::stop(std::chrono::milliseconds grace) {
  Impl& i = *impl_;
  if (i.stopping.exchange(true) || i.threads.empty()) return;
  asio::post(i.ioc, [&i] {
    beast::error_code ec;
    i.acceptor.close(ec);
  });
  // The sweep goes on during the grace period (time limits still apply), until ioc.stop().
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(i.mu);
    sessions.assign(i.sessions.begin(), i.sessions.end());
  }
  for (auto& s : sessions) s->close_if_idle();
  sessions.clear();
  {
    // In-flight requests finish and close their connections after answering.
    std::unique_lock lock(i.mu);
    i.drained.wait_for(lock, grace, [&i] { return i.sessions.empty(); });
  }
  i.ioc.stop();
  for (auto& t : i.threads) t.join();
  i.threads.clear();
  i.blocking.join();
  i.query_pool.join();
  // Connections still open after the grace period go now, while their io_context exists.
  std::unordered_set<std::shared_ptr<Session>> left;
  {
    std::lock_guard lock(i.mu);
    left.swap(i.sessions);
  }
  left.clear();
}

int HttpServer::port() const { return impl_->bound_port; }

size_t HttpServer::connections() const { return impl_->open.load(); }

size_t HttpServer::streams() const { return impl_->streams.load(); }

void HttpServer::run_blocking(std::function<void()> work, BlockingPool pool) {
  asio::post(pool == BlockingPool::kQuery ? impl_->query_pool : impl_->blocking, std::move(work));
}

}  // namespace doppel::gateway
