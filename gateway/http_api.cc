#include "gateway/http_api.h"

#include <algorithm>
#include <cctype>
#include <chrono>

#include "gateway/device_auth.h"
#include "gateway/http_server.h"
#include "gateway/openapi.h"
#include "twins/log.h"
#include "twins/record.h"
#include "twins/requests.h"

namespace doppel::gateway {
namespace {

using twins::ApiReply;
using twins::ApiRequest;
using twins::json;
using twins::ReplyKind;

std::string media_type(const HttpRequest& req) {
  std::string ct = req.header("Content-Type").value_or("");
  ct = ct.substr(0, ct.find(';'));
  ct.erase(std::remove_if(ct.begin(), ct.end(), [](unsigned char c) { return std::isspace(c); }),
           ct.end());
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
  return ct;
}

std::optional<size_t> parse_size(const std::string& s, size_t lo, size_t hi) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  size_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<size_t>(c - '0');
  }
  if (v < lo || v > hi) return std::nullopt;
  return v;
}

// Compares without an early exit, so timing does not reveal how much of a token matched.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  }
  return diff == 0;
}

bool any_matches(const std::vector<std::string>& tokens, const std::string& given) {
  bool found = false;
  for (const auto& t : tokens) found |= same_secret(given, t);
  return found;
}

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = twins::to_text(body);
  return r;
}

// The raw path split at '/', each segment percent-decoded afterwards: "%2F" inside an id stays
// part of the id (and is then refused as invalid), it never splits the path.
std::optional<std::vector<std::string>> segments_of(const std::string& raw_path) {
  std::vector<std::string> out;
  size_t start = 1;  // after the leading '/'
  if (raw_path.empty() || raw_path[0] != '/') return std::nullopt;
  while (start <= raw_path.size()) {
    const size_t slash = raw_path.find('/', start);
    const std::string_view raw = std::string_view(raw_path).substr(
        start, slash == std::string::npos ? std::string::npos : slash - start);
    auto decoded = percent_decode(raw);
    if (!decoded) return std::nullopt;
    out.push_back(std::move(*decoded));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (!out.empty() && out.back().empty()) out.pop_back();  // a trailing '/'
  return out;
}

}  // namespace

int http_status(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kMalformed:
    case StatusCode::kInvalidArgument:
    case StatusCode::kInvalidId:
    case StatusCode::kTooDeep:
      return 400;
    case StatusCode::kTooLarge:
      return 413;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kPreconditionFailed:
      return 412;
    case StatusCode::kConflict:
      return 409;
    case StatusCode::kQueueFull:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

std::string problem_json(int status, std::string_view code, std::string_view detail,
                         std::string_view instance) {
  return problem_response(status, code, detail, instance).body;
}

// One request in flight: what it asked and where its answer goes.
struct Exchange {
  HttpRequest req;
  Responder respond;
  std::vector<std::string> segments;

  void send(HttpResponse r) { respond(std::move(r)); }
  void problem(int status, std::string_view code, std::string_view detail) {
    respond(problem_response(status, code, detail, req.path));
  }
  void status(const Status& s) { problem(http_status(s.code()), code_name(s.code()), s.message()); }
  void json_body(int status, const json& body) { respond(json_response(status, body)); }
};
using ExchangePtr = std::shared_ptr<Exchange>;

struct HttpApi::Impl {
  Impl(HttpOptions o, twins::Runtime& r, twins::TwinStore& s, Metrics& m,
       std::function<Readiness()> ready, DeviceAuth* auth)
      : options(std::move(o)),
        rt(r),
        store(s),
        metrics(m),
        readiness(std::move(ready)),
        device_auth(auth) {
    HttpServerOptions so = options.server;
    so.host = options.host;
    so.port = options.port;
    server = std::make_unique<HttpServer>(
        so,
        [this](HttpRequest&& req, Responder respond) { route(std::move(req), std::move(respond)); },
        m);
  }

  const twins::Limits& limits() const { return rt.logic().policy().limits; }

  // ---- routing --------------------------------------------------------------------------------

  // The routes: method and path pattern ({name} matches one segment), and the handler.
  struct Route {
    const char* method;
    const char* pattern;
    void (Impl::*handler)(const ExchangePtr&);
  };
  static const std::vector<Route>& route_table() {
    static const std::vector<Route> kRoutes = {
        {"GET", "/healthz", &Impl::healthz},
        {"GET", "/readyz", &Impl::ready},
        {"GET", "/metrics", &Impl::metrics_text},
        {"GET", "/v1/openapi.json", &Impl::openapi},
        {"GET", "/v1/twins", &Impl::list_twins},
        {"GET", "/v1/twins/{id}", &Impl::get_twin},
        {"PUT", "/v1/twins/{id}", &Impl::provision},
        {"PATCH", "/v1/twins/{id}", &Impl::patch_settings},
        {"DELETE", "/v1/twins/{id}", &Impl::remove},
        {"GET", "/v1/twins/{id}/desired", &Impl::get_desired},
        {"PATCH", "/v1/twins/{id}/desired", &Impl::patch_desired},
        {"PUT", "/v1/twins/{id}/desired", &Impl::put_desired},
        {"POST", "/v1/twins/{id}/commands", &Impl::enqueue},
        {"GET", "/v1/twins/{id}/commands", &Impl::list_commands},
        {"GET", "/v1/twins/{id}/commands/{command_id}", &Impl::get_command},
        {"DELETE", "/v1/twins/{id}/commands/{command_id}", &Impl::cancel_command},
    };
    return kRoutes;
  }

  static bool matches(const char* pattern, const std::vector<std::string>& segments) {
    const auto parts = *segments_of(pattern);
    if (parts.size() != segments.size()) return false;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].front() != '{' && parts[i] != segments[i]) return false;
    }
    return true;
  }

  void route(HttpRequest&& req, Responder respond) {
    auto x = std::make_shared<Exchange>();
    x->req = std::move(req);
    x->respond = std::move(respond);
    auto segs = segments_of(x->req.path);
    if (!segs) return x->problem(400, "malformed", "the path has a malformed percent-escape");
    x->segments = std::move(*segs);
    std::string allow;
    for (const Route& r : route_table()) {
      if (!matches(r.pattern, x->segments)) continue;
      if (x->req.method != r.method) {
        allow += (allow.empty() ? "" : ", ") + std::string(r.method);
        continue;
      }
      if (!authorize(*x)) return;
      // Every route below /v1/twins/{id} starts by checking the id.
      if (x->segments.size() >= 3 && x->segments[1] == "twins" && !twin_id(*x)) return;
      return (this->*r.handler)(x);
    }
    if (!allow.empty()) {
      if (!authorize(*x)) return;
      return not_allowed(*x, allow);
    }
    if (!authorize(*x)) return;
    x->problem(404, "not_found",
               "no such resource or method; see GET /v1/openapi.json (e.g. GET /v1/twins/{id})");
  }

  void healthz(const ExchangePtr& x) { x->json_body(200, {{"status", "ok"}}); }
  void metrics_text(const ExchangePtr& x) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = metrics.render();
    x->send(std::move(r));
  }
  void openapi(const ExchangePtr& x) {
    HttpResponse r;
    r.content_type = "application/json";
    r.body = openapi_document();
    x->send(std::move(r));
  }
  void get_twin(const ExchangePtr& x) { call(x, twins::GetTwin{}); }
  void provision(const ExchangePtr& x) { settings(x, false); }
  void patch_settings(const ExchangePtr& x) { settings(x, true); }
  void get_desired(const ExchangePtr& x) {
    call(x, twins::GetTwin{}, Etag::kDesiredVersion, "desired");
  }
  void patch_desired(const ExchangePtr& x) { update_desired(x, false); }
  void put_desired(const ExchangePtr& x) { update_desired(x, true); }
  void get_command(const ExchangePtr& x) { call(x, twins::GetCommand{x->segments[4]}); }
  void cancel_command(const ExchangePtr& x) { call(x, twins::CancelCommand{x->segments[4]}); }

  static void not_allowed(Exchange& x, const std::string& allow) {
    HttpResponse r =
        problem_response(405, "method_not_allowed", "this resource answers " + allow, x.req.path);
    r.headers.emplace_back("Allow", allow);
    x.send(std::move(r));
  }

  // Bearer tokens (compared, never logged). /healthz and /readyz are open.
  bool authorize(Exchange& x) {
    if (options.tokens.empty() && options.read_tokens.empty()) return true;
    // Open: liveness, readiness and the API description (it holds no data).
    if (x.req.path == "/healthz" || x.req.path == "/readyz" || x.req.path == "/v1/openapi.json") {
      return true;
    }
    const std::string header = x.req.header("Authorization").value_or("");
    const std::string token = header.rfind("Bearer ", 0) == 0 ? header.substr(7) : std::string();
    if (!token.empty() && any_matches(options.tokens, token)) return true;
    if (!token.empty() && any_matches(options.read_tokens, token)) {
      if (x.req.method == "GET" || x.req.method == "HEAD") return true;
      x.problem(403, "forbidden",
                "this token may only read (GET); changes need a token given with --api-token");
      return false;
    }
    HttpResponse r =
        problem_response(401, "unauthorized",
                         token.empty() ? "send 'Authorization: Bearer <token>'; see --api-token"
                                       : "the bearer token is not valid",
                         x.req.path);
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"doppel\"");
    x.send(std::move(r));
    return false;
  }

  // ---- requests -------------------------------------------------------------------------------

  // The twin id segment, or a 400 already sent.
  std::optional<std::string> twin_id(Exchange& x) {
    const std::string& id = x.segments[2];
    if (Status s = twins::check_device_id(id, limits()); !s) {
      x.status(s);
      return std::nullopt;
    }
    return id;
  }

  // The JSON body, or an error already sent. An empty body is null when `allow_empty`.
  std::optional<json> body(Exchange& x, std::initializer_list<std::string_view> media_types,
                           bool allow_empty) {
    const std::string mt = media_type(x.req);
    if (!mt.empty() && std::find(media_types.begin(), media_types.end(), mt) == media_types.end()) {
      std::string allowed;
      for (auto m : media_types) allowed += (allowed.empty() ? "" : ", ") + std::string(m);
      x.problem(415, "unsupported_media_type",
                "Content-Type '" + mt + "' is not accepted here; use " + allowed);
      return std::nullopt;
    }
    if (x.req.body.empty()) {
      if (allow_empty) return json();
      x.problem(400, "malformed", "the request body is empty; expected JSON");
      return std::nullopt;
    }
    auto doc = twins::parse_json(x.req.body, limits().max_payload_bytes(), limits().max_depth + 2);
    if (!doc) {
      x.status(doc.status());
      return std::nullopt;
    }
    return std::move(*doc);
  }

  enum class Etag { kVersion, kDesiredVersion };

  static HttpResponse to_response(ApiReply r, Etag etag, const char* body_field,
                                  const std::string& path) {
    if (!r.status) {
      return problem_response(http_status(r.status.code()), code_name(r.status.code()),
                              r.status.message(), path);
    }
    int status = 200;
    switch (r.kind) {
      case ReplyKind::kOk:
        status = 200;
        break;
      case ReplyKind::kCreated:
        status = 201;
        break;
      case ReplyKind::kAccepted:
        status = 202;
        break;
      case ReplyKind::kNoContent: {
        HttpResponse none;
        none.status = 204;
        return none;
      }
    }
    HttpResponse res = json_response(status, body_field != nullptr ? r.body[body_field] : r.body);
    if (etag == Etag::kDesiredVersion && r.body.contains("desired_version")) {
      res.headers.emplace_back(
          "ETag", "\"" + std::to_string(r.body["desired_version"].get<uint64_t>()) + "\"");
    } else if (!r.etag.empty()) {
      res.headers.emplace_back("ETag", r.etag);
    }
    return res;
  }

  // Runs `request` on the twin; answers when the runtime does (after the commit), or `then` gets
  // the reply first (on the thread that answered; it must not block).
  void call(const ExchangePtr& x, ApiRequest request, Etag etag = Etag::kVersion,
            const char* body_field = nullptr,
            std::function<void(const ExchangePtr&, ApiReply)> then = nullptr) {
    const std::string id = x->segments[2];
    rt.call(id, std::move(request),
            [x, etag, body_field, then = std::move(then)](ApiReply r) mutable {
              if (then) return then(x, std::move(r));
              x->send(to_response(std::move(r), etag, body_field, x->req.path));
            });
  }

  void ready(const ExchangePtr& xp) {
    Exchange& x = *xp;
    const Readiness r = readiness();
    if (r.store_open && r.broker_connected) {
      json body = {{"status", r.broker_dropping ? "degraded" : "ready"},
                   {"store", "open"},
                   {"broker", "connected"},
                   {"broker_dropped_messages", r.broker_dropped}};
      if (r.broker_dropping) {
        body["detail"] =
            "the broker is dropping messages (its queue for a client is full): device reports are "
            "being lost; see README, Overload";
      }
      return x.json_body(200, body);
    }
    std::string detail = "not ready:";
    if (!r.store_open) detail += " the store is not open;";
    if (!r.broker_connected) {
      detail += " the broker is not connected (reconnecting";
      if (!r.broker_state.empty()) detail += "; embedded broker " + r.broker_state;
      detail += ");";
    }
    detail.pop_back();
    x.problem(503, "unavailable", detail);
  }

  void settings(const ExchangePtr& x, bool is_patch) {
    auto doc = body(*x, {"application/json", "application/merge-patch+json"}, true);
    if (!doc) return;
    const std::string id = x->segments[2];
    bool credentials = false;
    bool revoke = false;
    if (!is_patch && doc->is_object() && doc->contains("credentials")) {
      const json& c = (*doc)["credentials"];
      if (!c.is_boolean()) {
        return x->problem(400, "invalid_argument", "credentials must be true or false");
      }
      credentials = c.get<bool>();
      revoke = !credentials && device_auth != nullptr;
      doc->erase("credentials");
      if (credentials && device_auth == nullptr) {
        return x->problem(400, "invalid_argument",
                          "this gateway does not manage device credentials; start doppeld with "
                          "--device-auth (embedded broker)");
      }
      // Refused before anything changes: a refused request must not create the twin.
      if (credentials) {
        if (Status s = device_auth->check_device(id); !s) return x->status(s);
      }
    }
    auto s = twins::parse_twin_settings(*doc, is_patch, limits());
    if (!s) return x->status(s.status());
    if (is_patch) return call(x, twins::PatchTwin{std::move(*s)});
    if (!credentials && !revoke) return call(x, twins::ProvisionTwin{std::move(*s)});
    // Credentials are issued (or revoked) after the twin is committed, on the blocking pool:
    // hashing and the password-file rewrite take milliseconds.
    call(x, twins::ProvisionTwin{std::move(*s)}, Etag::kVersion, nullptr,
         [this, credentials, id](const ExchangePtr& ex, ApiReply r) {
           if (!r.status)
             return ex->send(to_response(std::move(r), Etag::kVersion, nullptr, ex->req.path));
           server->run_blocking([this, ex, credentials, id, r = std::move(r)]() mutable {
             if (!credentials) {
               if (Status st = device_auth->revoke(id); !st) return ex->status(st);
               return ex->send(to_response(std::move(r), Etag::kVersion, nullptr, ex->req.path));
             }
             auto password = device_auth->issue(id);
             if (!password) return ex->status(password.status());
             // Shown here, once; kept only as a hash. A PUT with credentials on an existing twin
             // replaces the password.
             r.body["credentials"] = {{"username", id}, {"password", *password}};
             ex->send(to_response(std::move(r), Etag::kVersion, nullptr, ex->req.path));
           });
         });
  }

  void remove(const ExchangePtr& x) {
    if (device_auth == nullptr) return call(x, twins::DeleteTwin{});
    // Credentials go first: a deprovisioned device must not keep access, even if the delete
    // itself then fails and is retried.
    server->run_blocking([this, x] {
      if (Status s = device_auth->revoke(x->segments[2]); !s) return x->status(s);
      call(x, twins::DeleteTwin{});
    });
  }

  void update_desired(const ExchangePtr& x, bool replace) {
    std::optional<uint64_t> if_match;
    if (auto h = x->req.header("If-Match")) {
      auto m = twins::parse_if_match(*h);
      if (!m) return x->status(m.status());
      if_match = *m;
    }
    auto doc = replace ? body(*x, {"application/json"}, false)
                       : body(*x, {"application/merge-patch+json", "application/json"}, false);
    if (!doc) return;
    call(x, twins::UpdateDesired{std::move(*doc), replace, if_match}, Etag::kDesiredVersion);
  }

  void enqueue(const ExchangePtr& x) {
    auto doc = body(*x, {"application/json"}, false);
    if (!doc) return;
    auto cmd = twins::parse_command_request(*doc, limits());
    if (!cmd) return x->status(cmd.status());
    call(x, twins::EnqueueCommand{std::move(*cmd)});
  }

  void list_twins(const ExchangePtr& x) {
    size_t limit = 100;
    if (auto l = x->req.param("limit")) {
      auto v = parse_size(*l, 1, 1000);
      if (!v) return x->problem(400, "invalid_argument", "limit must be 1 to 1000");
      limit = *v;
    }
    const std::string cursor = x->req.param("cursor").value_or("");
    if (!cursor.empty() && !twins::valid_device_id(cursor, limits())) {
      return x->problem(400, "invalid_argument",
                        "cursor must be the next_cursor of a previous page");
    }
    // A store read: off the network threads.
    server->run_blocking([this, x, cursor, limit] {
      auto page = store.list(cursor, limit + 1);
      if (!page) return x->status(page.status());
      json items = json::array();
      std::string last;
      for (size_t i = 0; i < page->size() && i < limit; ++i) {
        auto t = twins::from_record((*page)[i]);
        if (!t) return x->status(t.status());
        items.push_back(twins::twin_document(*t, rt.logic().stale_after_ms(*t)));
        last = t->id;
      }
      const bool more = page->size() > limit;
      x->json_body(200, {{"items", std::move(items)}, {"next_cursor", more ? json(last) : json()}});
    });
  }

  void list_commands(const ExchangePtr& x) {
    twins::ListCommands q;
    if (auto st = x->req.param("status")) {
      q.status = twins::parse_command_status(*st);
      if (!q.status) {
        return x->problem(400, "invalid_argument",
                          "status must be one of queued, sent, succeeded, failed, rejected, "
                          "expired, timed_out, cancelled");
      }
    }
    if (auto l = x->req.param("limit")) {
      auto v = parse_size(*l, 1, 1000);
      if (!v) return x->problem(400, "invalid_argument", "limit must be 1 to 1000");
      q.limit = *v;
    }
    if (auto c = x->req.param("cursor")) {
      auto v = parse_size(*c, 0, 999'999'999);
      if (!v) {
        return x->problem(400, "invalid_argument",
                          "cursor must be the next_cursor of a previous page");
      }
      q.after_seq = *v;
    }
    call(x, q);
  }

  HttpOptions options;
  twins::Runtime& rt;
  twins::TwinStore& store;
  Metrics& metrics;
  std::function<Readiness()> readiness;
  DeviceAuth* device_auth;
  std::unique_ptr<HttpServer> server;
};

HttpApi::HttpApi(HttpOptions options, twins::Runtime& runtime, twins::TwinStore& store,
                 Metrics& metrics, std::function<Readiness()> readiness, DeviceAuth* device_auth)
    : impl_(std::make_unique<Impl>(std::move(options), runtime, store, metrics,
                                   std::move(readiness), device_auth)) {}

HttpApi::~HttpApi() { stop(); }

Status HttpApi::start() { return impl_->server->start(); }

void HttpApi::stop() {
  if (impl_) impl_->server->stop();
}

int HttpApi::port() const { return impl_->server->port(); }

std::vector<std::pair<std::string, std::string>> HttpApi::routes() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : Impl::route_table()) out.emplace_back(r.method, r.pattern);
  return out;
}

}  // namespace doppel::gateway
