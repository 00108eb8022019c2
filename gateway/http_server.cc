#include "gateway/http_server.h"

#include <sys/resource.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
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
  kShuttingDown,
  kCount
};
constexpr const char* kRefusalNames[] = {
    "max_connections",   "max_connections_per_ip", "header_timeout", "body_timeout",
    "headers_too_large", "body_too_large",         "malformed",      "shutting_down"};
static_assert(sizeof(kRefusalNames) / sizeof(kRefusalNames[0]) ==
              static_cast<size_t>(Refusal::kCount));

}  // namespace

std::optional<std::string> HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return std::nullopt;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
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

std::optional<std::string> HttpRequest::param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    const size_t amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1))
          .value_or(std::string());
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
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

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(HttpServerOptions o, Handler h, Metrics& m)
      : options(std::move(o)),
        handler(std::move(h)),
        blocking(static_cast<size_t>(std::max(1, options.blocking_threads))),
        acceptor(ioc) {
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
  }

  void accept();
  void refuse(Refusal why) { refused[static_cast<size_t>(why)]->inc(); }
  // Admits a connection from `ip`, or says why not.
  std::optional<Refusal> admit(const std::string& ip) {
    std::lock_guard lock(mu);
    if (open.load() >= options.max_connections) return Refusal::kMaxConnections;
    size_t& n = per_ip[ip];
    if (n >= options.max_connections_per_ip) return Refusal::kMaxConnectionsPerIp;
    ++n;
    open.fetch_add(1);
    return std::nullopt;
  }
  void release(const std::string& ip) {
    std::lock_guard lock(mu);
    if (auto it = per_ip.find(ip); it != per_ip.end() && --it->second == 0) per_ip.erase(it);
    open.fetch_sub(1);
    drained.notify_all();
  }

  HttpServerOptions options;
  Handler handler;
  Counter* refused[static_cast<size_t>(Refusal::kCount)] = {};
  Counter* responses[6] = {};
  Histogram* latency = nullptr;
  std::atomic<size_t> open{0};
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable drained;
  std::unordered_map<std::string, size_t> per_ip;         // under mu
  std::unordered_set<std::shared_ptr<Session>> sessions;  // under mu: for shutdown
  int bound_port = -1;
  asio::thread_pool blocking;
  // Last: destroyed first, with the handlers it still holds, while the rest is alive.
  asio::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
};

// One connection: reads a request, hands it to the handler, writes the answer, reads the next.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server, std::string ip)
      : stream_(std::move(socket)),
        server_(server),
        ip_(std::move(ip)),
        timer_(stream_.get_executor()) {}

  void start() { read_header(); }

  // Shutdown: a connection waiting for a request closes now; one mid-request after its answer.
  void close_if_idle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

  // Writes `res` and closes (a refusal before or instead of a request).
  void refuse(HttpResponse res) {
    busy_ = true;
    keep_alive_ = false;
    write(std::move(res));
  }

  const std::string& ip() const { return ip_; }

 private:
  const HttpServerOptions& o() const { return server_.options; }

  // Limits how long the current read may take: when it expires, the read is cancelled (not the
  // connection closed, as tcp_stream's own timeout would), so a 408 can still be written.
  void arm(std::chrono::milliseconds limit) {
    const uint64_t phase = ++phase_;
    timed_out_ = false;
    timer_.expires_after(limit);
    timer_.async_wait([self = shared_from_this(), phase](beast::error_code ec) {
      if (ec || phase != self->phase_) return;  // cancelled, or a later phase
      self->timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
  }
  void disarm() {
    ++phase_;
    timer_.cancel();
  }

  void wait_for_next() {
    if (server_.stopping.load()) return close();
    if (buffer_.size() > 0) return read_header();  // pipelined: already here
    // Idle keep-alive: wait for the first byte under the idle timeout, then the header timeout.
    arm(o().idle_timeout);
    stream_.socket().async_wait(tcp::socket::wait_read,
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
        stream_, buffer_, *parser_,
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
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
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
    busy_ = true;
    if (parser_->is_done()) return dispatch();
    arm(o().body_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec2, size_t) { self->on_body(ec2); });
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
    const size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& f : msg) req.headers.emplace_back(f.name_string(), f.value());
    req.body = std::move(msg.body());
    req.peer = ip_;
    started_ = Clock::now();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    std::weak_ptr<Session> weak = shared_from_this();
    auto owner = server_.shared_from_this();  // keeps the io_context alive for late answers
    server_.handler(std::move(req), [weak, owner, answered](HttpResponse res) {
      if (answered->exchange(true)) return;  // exactly once
      if (auto self = weak.lock()) {
        asio::post(self->stream_.get_executor(),
                   [self, res = std::move(res)]() mutable { self->write(std::move(res)); });
      }
    });
  }

  void refuse(Refusal why, int status, std::string_view code, const std::string& detail) {
    server_.refuse(why);
    refuse(problem_response(status, code, detail));
  }

  void write(HttpResponse res) {
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "doppeld");
    for (auto& [k, v] : res.headers) out->set(k, v);
    if (!res.content_type.empty()) out->set(http::field::content_type, res.content_type);
    out->body() = std::move(res.body);
    out->keep_alive(keep_alive_);
    out->prepare_payload();
    const int cls = res.status / 100;
    if (cls >= 1 && cls <= 5) server_.responses[cls]->inc();
    if (started_) {
      server_.latency->observe(std::chrono::duration<double>(Clock::now() - *started_).count());
      started_.reset();
    }
    stream_.expires_after(o().body_timeout);  // a client that does not read its answer
    http::async_write(stream_, *out,
                      [self = shared_from_this(), out](beast::error_code ec, size_t) {
                        self->busy_ = false;
                        if (ec) return self->close();
                        if (!self->keep_alive_) return self->linger_close();
                        self->stream_.expires_never();
                        self->wait_for_next();
                      });
  }

  // Closes after the client has had its answer: stop sending, then discard what it still sends
  // (a refused body) for a while, so that closing with unread data does not reset the
  // connection before the client read the answer. Memory stays at one scratch buffer.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    linger_deadline_ = Clock::now() + std::chrono::seconds(2);
    discard();
  }

  void discard() {
    if (Clock::now() >= linger_deadline_ || lingered_ > (8u << 20)) return close();
    stream_.expires_at(linger_deadline_);
    stream_.async_read_some(asio::buffer(scratch_),
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
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
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

 public:
  ~Session() { server_.release(ip_); }

 private:
  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  std::string ip_;
  asio::steady_timer timer_;  // the current read's time limit (arm/disarm)
  uint64_t phase_ = 0;
  bool timed_out_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<Clock::time_point> started_;
  bool keep_alive_ = true;
  bool busy_ = false;
  bool closed_ = false;
  Clock::time_point linger_deadline_;
  size_t lingered_ = 0;
  char scratch_[4096] = {};
};

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
        asio::write(s, asio::buffer(out), ignored);
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

void HttpServer::run_blocking(std::function<void()> work) {
  asio::post(impl_->blocking, std::move(work));
}

}  // namespace doppel::gateway
