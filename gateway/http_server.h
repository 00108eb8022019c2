// HttpServer: an event-driven HTTP/1.1 server on Boost.Beast and Asio (one io_context on a few
// threads; no thread per connection). It owns the transport and its limits — how many
// connections, per client address too; how long a client may take to send its headers, its body,
// or nothing at all between requests; how large headers and bodies may be — and answers every
// refusal with problem+json where a response can still be written, counting each in /metrics.
// Requests on one connection are answered in order (pipelining). With a certificate and key it
// speaks HTTPS only.
//
// A response can also be a stream (chunked; e.g. text/event-stream): the handler answers with
// HttpResponse::stream set, and the producer then writes through an HttpStream at the client's
// pace — it may ask how much room the client has and be told when its output has drained. A
// client whose unsent output passes the bound (stream_buffer_bytes) is disconnected, so a slow
// reader costs at most that much memory and never slows other clients.
//
// A Handler gets the request and a Responder, and must call the Responder exactly once, from any
// thread, whenever the answer is ready; the handler itself must not block (blocking work goes to
// run_blocking()). Beast and Asio stay inside http_server.cc.
//
// Thread-safety: start() and stop() from the owner; Responders and run_blocking() from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "twins/metrics.h"
#include "twins/status.h"

namespace doppel::gateway {

struct HttpRequest {
  std::string method;  // "GET", ...
  std::string target;  // as sent: "/v1/twins/a%2Fb?limit=5"
  std::string path;    // the target before '?', still percent-encoded
  std::string query;   // after '?', without it
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent
  std::string body;
  std::string peer;  // the client's address

  // The first header of that name (case-insensitive), if any.
  std::optional<std::string> header(std::string_view name) const;
  // The first query parameter of that name, decoded as a form ('+' is a space), if any.
  std::optional<std::string> param(std::string_view name) const;
  // The name of the first query parameter whose name or value has a malformed percent-escape
  // (such a request is refused before any handler reads it), or nullopt.
  std::optional<std::string> malformed_param() const;
  // Every value of a repeated query parameter, in order.
  std::vector<std::string> params(std::string_view name) const;
};

// Why a stream ended.
enum class StreamEnd {
  kEnded,       // the producer called end() and everything was sent
  kClientGone,  // the client closed the connection, or writing to it failed
  kTooSlow,     // the client's unsent output passed the bound: it was disconnected
  kShutdown,    // the server is stopping (the stream was ended cleanly)
};

// The producer's side of a streaming response. Every method may be called from any thread;
// callbacks run on a network thread and must not block. After the stream ends, writes are
// refused and pending callbacks are dropped (on_close still runs, once).
class HttpStream {
 public:
  virtual ~HttpStream() = default;
  // Queues `data` as one chunk. false: the stream is over and nothing was queued — or this write
  // took the unsent output past the bound, and the client is being disconnected (a write into
  // an empty queue is accepted whatever its size).
  virtual bool write(std::string data) = 0;
  // Bytes that may still be queued before the client is cut off; 0 once the stream is over.
  virtual size_t room() const = 0;
  // `then` runs once everything queued so far has been written to the connection (at once if
  // nothing is queued): the pull-at-the-client's-pace signal.
  virtual void on_drain(std::function<void()> then) = 0;
  // `then` runs after `delay`, unless the stream has ended by then (heartbeats, ticks).
  virtual void after(std::chrono::milliseconds delay, std::function<void()> then) = 0;
  // `then` runs exactly once when the stream ends, whatever the reason (set it first).
  virtual void on_close(std::function<void(StreamEnd)> then) = 0;
  // Ends the stream after what is queued has been sent (the final chunk; the connection stays
  // open for the next request).
  virtual void end() = 0;
  virtual bool closed() const = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;  // empty: no body
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set: a streaming response. The status and headers go out at once (chunked, no body), then
  // this runs, on a network thread, with the stream to write to.
  std::function<void(std::shared_ptr<HttpStream>)> stream;
};

using Responder = std::function<void(HttpResponse)>;
using Handler = std::function<void(HttpRequest&& request, Responder respond)>;

enum class BlockingPool { kGeneral, kQuery };

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port
  int threads = 2;           // network threads
  int blocking_threads = 2;  // BlockingPool::kGeneral
  int query_threads = 2;     // BlockingPool::kQuery
  size_t max_connections = 10'000;
  size_t max_connections_per_ip = 1'000;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds body_timeout{30'000};
  size_t max_header_bytes = 16 * 1024;
  size_t max_header_count = 100;
  // The largest body any route takes (routes check their own, smaller limits): POST /v1/jobs
  // with 10,000 listed twins of the longest ids.
  size_t max_body_bytes = 2 << 20;
  size_t stream_buffer_bytes = 1 << 20;  // a streaming client's unsent output, at most
  // Streams open at once, in all and per client address (429 / 503 problem+json beyond).
  size_t max_streams = 2048;
  size_t max_streams_per_ip = 64;
  // HTTPS: PEM certificate chain and private key (both, or neither for plain HTTP).
  std::string tls_cert;
  std::string tls_key;
};

// Percent-decodes one path segment ('+' stays '+'); nullopt when malformed.
std::optional<std::string> percent_decode(std::string_view s);
// Decodes a query-string name or value as a form does ('+' is a space); nullopt when malformed.
std::optional<std::string> query_decode(std::string_view s);
// The reason phrase of a status code ("Not Found"); "Error" for one it does not know.
std::string reason_phrase(int status);
// An RFC 9457 problem document as a response: the one place problem+json is built.
HttpResponse problem_response(int status, std::string_view code, std::string_view detail,
                              std::string_view instance = {});

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler, Metrics& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Raises RLIMIT_NOFILE as far as allowed (and logs what was granted), binds and starts serving.
  Status start();
  // Graceful: stops accepting, lets in-flight requests finish (up to `grace`), closes the rest.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  int port() const;
  size_t connections() const;
  size_t streams() const;
  // Runs `work` on one of the server's blocking pools (store reads, password hashing, file
  // rewrites): fleet scans on kQuery, everything else on kGeneral, so that a client running slow
  // queries never delays the change feed, history or job reads.
  void run_blocking(std::function<void()> work, BlockingPool pool = BlockingPool::kGeneral);

 private:
  friend class Session;      // a connection (http_server.cc)
  friend class StreamState;  // a streaming response (http_server.cc)
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace doppel::gateway
