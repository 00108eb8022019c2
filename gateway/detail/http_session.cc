// One HTTP connection (Session) and one streaming response (StreamState), which call each
// other: a Session reads a request (headers, then the body within its limits), refuses framing it
// cannot trust, hands the request to the handler, writes the answer (or a stream, chunk by chunk
// at the client's pace) and reads the next; the server's accept loop and deadline sweep, which
// create and look at Sessions, live here too. The server's state is detail/http_server_impl.h.
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include "gateway/detail/http_server_impl.h"
#include "gateway/detail/http_stream.h"
#include "twins/document.h"
#include "twins/log.h"

namespace doppel::gateway {

namespace http = beast::http;

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
    // A stream counts its status once admitted (a refused one answers, and counts, a problem).
    if (res.stream && !head_) return start_stream(std::move(res));
    count(res.status);
    if (head_) return write_head(std::move(res));
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
    count(res.status);
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
        const HttpResponse problem =
            problem_response(503, "unavailable",
                             from_one_ip ? "too many connections from this address; close idle ones"
                                         : "too many open connections; retry later");
        std::string out =
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: " +
            problem.content_type + "\r\nContent-Length: " + std::to_string(problem.body.size()) +
            "\r\n\r\n" + problem.body;
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

void HttpServer::Impl::close_idle_sessions() {
  std::vector<std::shared_ptr<Session>> open_sessions;
  {
    std::lock_guard lock(mu);
    open_sessions.assign(sessions.begin(), sessions.end());
  }
  for (auto& s : open_sessions) s->close_if_idle();
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

}  // namespace doppel::gateway
