// HttpServer: an event-driven HTTP/1.1 server on Boost.Beast and Asio (one io_context on a few
// threads; no thread per connection). It owns the transport and its limits — how many
// connections, per client address too; how long a client may take to send its headers, its body,
// or nothing at all between requests; how large headers and bodies may be — and answers every
// refusal with problem+json where a response can still be written, counting each in /metrics.
// Requests on one connection are answered in order (pipelining).
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
  // The first query parameter of that name, percent-decoded, if any.
  std::optional<std::string> param(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;  // empty: no body
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using Responder = std::function<void(HttpResponse)>;
using Handler = std::function<void(HttpRequest&& request, Responder respond)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  int threads = 2;  // network threads
  int blocking_threads = 2;
  size_t max_connections = 10'000;
  size_t max_connections_per_ip = 1'000;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds body_timeout{30'000};
  size_t max_header_bytes = 16 * 1024;
  size_t max_header_count = 100;
  size_t max_body_bytes = 1 << 20;
};

// Percent-decodes one path segment or query value ('+' stays '+'); nullopt when malformed.
std::optional<std::string> percent_decode(std::string_view s);
// An RFC 9457 problem document as a response.
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
  // Runs `work` on the server's blocking pool (store reads, password hashing, file rewrites).
  void run_blocking(std::function<void()> work);

 private:
  friend class Session;  // a connection (http_server.cc)
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace doppel::gateway
