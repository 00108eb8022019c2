// Router: the API's route table. A route is a method, a path pattern ("/v1/twins/{id}": a
// {placeholder} matches one segment) and a handler. Routing is on the raw path, split at '/';
// each segment is percent-decoded afterwards, so "%2F" inside an id stays part of the id (and is
// then refused as an invalid id) and never splits the path. Every answer carries X-Request-Id. A
// path no route matches is 404; a path some route matches with another method is 405 with Allow.
// Access is checked first (the `guard`), so an unknown path does not tell a client without a token
// what exists.
//
// Thread-safety: add() during set-up only; dispatch() from any thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/http_problems.h"
#include "gateway/http_server.h"

namespace doppel::gateway {

// One request in flight: what it asked, its decoded path segments, and where its answer goes.
struct Exchange {
  HttpRequest req;
  Responder respond;  // adds X-Request-Id to the answer
  std::vector<std::string> segments;
  // The client's X-Request-Id (printable ASCII, at most 128 bytes), or one made up; every answer
  // echoes it.
  std::string request_id;
  // Which token the request used (its name, never the secret); empty when the API is open.
  std::string principal;

  void send(HttpResponse r) { respond(std::move(r)); }
  void problem(int status, std::string_view code, std::string_view detail) {
    respond(problem_response(status, code, detail, req.path));
  }
  void status(const Status& s) { respond(status_response(s, req.path)); }
  void json_body(int status, const twins::json& body) { respond(json_response(status, body)); }
};
using ExchangePtr = std::shared_ptr<Exchange>;
using RouteHandler = std::function<void(const ExchangePtr&)>;

// The raw path split at '/', each segment percent-decoded; nullopt for a malformed escape.
std::optional<std::vector<std::string>> path_segments(const std::string& raw_path);

class Router {
 public:
  // Access: open routes need no token (they hold no data).
  enum class Access { kToken, kOpen };
  // The access check: nullopt allows (and may name the principal), otherwise the refusal.
  using Guard = std::function<std::optional<HttpResponse>(Exchange&, Access)>;

  void add(std::string method, std::string pattern, RouteHandler handler,
           Access access = Access::kToken);
  void dispatch(HttpRequest&& req, Responder respond, const Guard& guard) const;
  // (method, pattern) of every route, in the order added.
  std::vector<std::pair<std::string, std::string>> routes() const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> parts;
    RouteHandler handler;
    Access access;
  };
  static bool matches(const Route& r, const std::vector<std::string>& segments);
  std::vector<Route> routes_;
};

}  // namespace doppel::gateway
