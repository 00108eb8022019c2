#include "gateway/http_api.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <thread>

#include "gateway/device_auth.h"
#include "twins/log.h"
#include "twins/record.h"
#include "twins/requests.h"

namespace doppel::gateway {
namespace {

using twins::ApiReply;
using twins::ApiRequest;
using twins::json;
using twins::ReplyKind;

const char* reason(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

std::string media_type(const httplib::Request& req) {
  std::string ct = req.get_header_value("Content-Type");
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
  json p = {{"type", "urn:doppel:problem:" + std::string(code)},
            {"title", reason(status)},
            {"status", status},
            {"detail", detail}};
  if (!instance.empty()) p["instance"] = instance;
  return twins::to_text(p);
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

struct HttpApi::Impl {
  Impl(HttpOptions o, twins::Runtime& r, twins::TwinStore& s, Metrics& m,
       std::function<Readiness()> ready, DeviceAuth* auth)
      : options(std::move(o)),
        rt(r),
        store(s),
        metrics(m),
        readiness(std::move(ready)),
        device_auth(auth) {
    for (int c = 1; c <= 5; ++c) {
      responses[c] = &m.counter("doppel_http_responses_total", "HTTP responses by status class",
                                "class=\"" + std::to_string(c) + "xx\"");
    }
    latency = &m.histogram("doppel_http_request_seconds", "HTTP request latency",
                           {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5});
    routes();
  }

  const twins::Limits& limits() const { return rt.logic().policy().limits; }

  // ---- responses ------------------------------------------------------------------------------

  static void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(twins::to_text(body), "application/json");
  }

  static void send_problem(httplib::Response& res, const httplib::Request& req, int status,
                           std::string_view code, std::string_view detail) {
    res.status = status;
    res.set_content(problem_json(status, code, detail, req.path), "application/problem+json");
  }

  static void send_status(httplib::Response& res, const httplib::Request& req, const Status& s) {
    send_problem(res, req, http_status(s.code()), code_name(s.code()), s.message());
  }

  enum class Etag { kVersion, kDesiredVersion };

  void reply(const httplib::Request& req, httplib::Response& res, std::future<ApiReply> f,
             Etag etag = Etag::kVersion, const char* body_field = nullptr) {
    if (f.wait_for(options.request_timeout) != std::future_status::ready) {
      return send_problem(res, req, 503, "unavailable",
                          "the twin did not answer in time; the gateway is overloaded or "
                          "shutting down, retry later");
    }
    ApiReply r = f.get();
    if (!r.status) return send_status(res, req, r.status);
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
      case ReplyKind::kNoContent:
        res.status = 204;
        return;
    }
    if (etag == Etag::kDesiredVersion && r.body.contains("desired_version")) {
      res.set_header("ETag",
                     "\"" + std::to_string(r.body["desired_version"].get<uint64_t>()) + "\"");
    } else if (r.etag) {
      res.set_header("ETag", *r.etag);
    }
    send_json(res, status, body_field != nullptr ? r.body[body_field] : r.body);
  }

  // ---- requests -------------------------------------------------------------------------------

  // The id path parameter, or a 400 already sent.
  std::optional<std::string> twin_id(const httplib::Request& req, httplib::Response& res) {
    std::string id = req.matches[1];
    if (Status s = twins::check_device_id(id, limits()); !s) {
      send_status(res, req, s);
      return std::nullopt;
    }
    return id;
  }

  // The JSON body, or an error already sent. An empty body is null when `allow_empty`.
  std::optional<json> body(const httplib::Request& req, httplib::Response& res,
                           std::initializer_list<std::string_view> media_types, bool allow_empty) {
    const std::string mt = media_type(req);
    if (!mt.empty() && std::find(media_types.begin(), media_types.end(), mt) == media_types.end()) {
      std::string allowed;
      for (auto m : media_types) allowed += (allowed.empty() ? "" : ", ") + std::string(m);
      send_problem(res, req, 415, "unsupported_media_type",
                   "Content-Type '" + mt + "' is not accepted here; use " + allowed);
      return std::nullopt;
    }
    if (req.body.empty()) {
      if (allow_empty) return json();
      send_problem(res, req, 400, "malformed", "the request body is empty; expected JSON");
      return std::nullopt;
    }
    auto doc = twins::parse_json(req.body, limits().max_payload_bytes(), limits().max_depth + 2);
    if (!doc) {
      send_status(res, req, doc.status());
      return std::nullopt;
    }
    return std::move(*doc);
  }

  void call(const httplib::Request& req, httplib::Response& res, const std::string& id,
            ApiRequest request, Etag etag = Etag::kVersion, const char* body_field = nullptr) {
    reply(req, res, rt.call(id, std::move(request)), etag, body_field);
  }

  // ---- routes ---------------------------------------------------------------------------------

  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  // Wraps a handler with metrics.
  httplib::Server::Handler measured(Handler h) {
    return [this, h = std::move(h)](const httplib::Request& req, httplib::Response& res) {
      const auto start = std::chrono::steady_clock::now();
      h(req, res);
      latency->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    };
  }

  void routes() {
    server.set_payload_max_length(1 << 20);
    server.set_tcp_nodelay(true);  // small responses must not wait for delayed ACKs (~40 ms)
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return authorize(req, res);
    });
    server.set_read_timeout(10, 0);
    server.set_keep_alive_max_count(10000);
    server.set_logger([this](const httplib::Request&, const httplib::Response& res) {
      const int c = res.status / 100;
      if (c >= 1 && c <= 5) responses[c]->inc();
    });
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const bool unknown = res.status == 404;
      send_problem(res, req, res.status,
                   unknown             ? "not_found"
                   : res.status == 413 ? "too_large"
                                       : "error",
                   unknown ? "no such resource or method; see the API in DESIGN §5 (e.g. GET "
                             "/v1/twins/{id})"
                   : res.status == 413 ? "the request body exceeds 1 MiB"
                                       : reason(res.status));
    });
    server.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unexpected error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          log_error("HTTP " + req.method + " " + req.path + ": " + what);
          send_problem(res, req, 500, "internal", "internal error; see the gateway log");
        });

    server.Get("/healthz", measured([](const httplib::Request&, httplib::Response& res) {
                 send_json(res, 200, {{"status", "ok"}});
               }));
    server.Get("/readyz", measured([this](const httplib::Request& req, httplib::Response& res) {
                 const Readiness r = readiness();
                 if (r.store_open && r.broker_connected) {
                   json body = {{"status", r.broker_dropping ? "degraded" : "ready"},
                                {"store", "open"},
                                {"broker", "connected"},
                                {"broker_dropped_messages", r.broker_dropped}};
                   if (r.broker_dropping) {
                     body["detail"] =
                         "the broker is dropping messages (its queue for a client is full): device "
                         "reports are being lost; see README, Overload";
                   }
                   return send_json(res, 200, body);
                 }
                 std::string detail = "not ready:";
                 if (!r.store_open) detail += " the store is not open;";
                 if (!r.broker_connected) {
                   detail += " the broker is not connected (reconnecting";
                   if (!r.broker_state.empty()) detail += "; embedded broker " + r.broker_state;
                   detail += ");";
                 }
                 detail.pop_back();
                 send_problem(res, req, 503, "unavailable", detail);
               }));
    server.Get("/metrics", measured([this](const httplib::Request&, httplib::Response& res) {
                 res.set_content(metrics.render(), "text/plain; version=0.0.4");
               }));

    server.Get("/v1/twins", measured([this](const httplib::Request& req, httplib::Response& res) {
                 list_twins(req, res);
               }));
    const std::string twin = R"(/v1/twins/([^/]+))";
    server.Get(twin, measured([this](const httplib::Request& req, httplib::Response& res) {
                 if (auto id = twin_id(req, res)) call(req, res, *id, twins::GetTwin{});
               }));
    server.Put(twin, measured([this](const httplib::Request& req, httplib::Response& res) {
                 settings(req, res, false);
               }));
    server.Patch(twin, measured([this](const httplib::Request& req, httplib::Response& res) {
                   settings(req, res, true);
                 }));
    server.Delete(twin, measured([this](const httplib::Request& req, httplib::Response& res) {
                    auto id = twin_id(req, res);
                    if (!id) return;
                    // Credentials go first: a deprovisioned device must not keep access, even if
                    // the delete itself then fails and is retried.
                    if (device_auth != nullptr) {
                      if (Status s = device_auth->revoke(*id); !s) return send_status(res, req, s);
                    }
                    call(req, res, *id, twins::DeleteTwin{});
                  }));

    const std::string desired = twin + "/desired";
    server.Get(desired, measured([this](const httplib::Request& req, httplib::Response& res) {
                 if (auto id = twin_id(req, res)) {
                   call(req, res, *id, twins::GetTwin{}, Etag::kDesiredVersion, "desired");
                 }
               }));
    server.Patch(desired, measured([this](const httplib::Request& req, httplib::Response& res) {
                   update_desired(req, res, false);
                 }));
    server.Put(desired, measured([this](const httplib::Request& req, httplib::Response& res) {
                 update_desired(req, res, true);
               }));

    const std::string commands = twin + "/commands";
    server.Post(commands, measured([this](const httplib::Request& req, httplib::Response& res) {
                  auto id = twin_id(req, res);
                  if (!id) return;
                  auto doc = body(req, res, {"application/json"}, false);
                  if (!doc) return;
                  auto cmd = twins::parse_command_request(*doc, limits());
                  if (!cmd) return send_status(res, req, cmd.status());
                  call(req, res, *id, twins::EnqueueCommand{std::move(*cmd)});
                }));
    server.Get(commands, measured([this](const httplib::Request& req, httplib::Response& res) {
                 list_commands(req, res);
               }));
    const std::string command = commands + R"(/([^/]+))";
    server.Get(command, measured([this](const httplib::Request& req, httplib::Response& res) {
                 if (auto id = twin_id(req, res))
                   call(req, res, *id, twins::GetCommand{req.matches[2]});
               }));
    server.Delete(command, measured([this](const httplib::Request& req, httplib::Response& res) {
                    if (auto id = twin_id(req, res))
                      call(req, res, *id, twins::CancelCommand{req.matches[2]});
                  }));
  }

  void settings(const httplib::Request& req, httplib::Response& res, bool is_patch) {
    auto id = twin_id(req, res);
    if (!id) return;
    auto doc = body(req, res, {"application/json", "application/merge-patch+json"}, true);
    if (!doc) return;
    bool credentials = false;
    bool revoke = false;
    if (!is_patch && doc->is_object() && doc->contains("credentials")) {
      const json& c = (*doc)["credentials"];
      if (!c.is_boolean()) {
        return send_problem(res, req, 400, "invalid_argument", "credentials must be true or false");
      }
      credentials = c.get<bool>();
      revoke = !credentials && device_auth != nullptr;
      doc->erase("credentials");
      if (credentials && device_auth == nullptr) {
        return send_problem(res, req, 400, "invalid_argument",
                            "this gateway does not manage device credentials; start doppeld "
                            "with --device-auth (embedded broker)");
      }
      // Refused before anything changes: a refused request must not create the twin.
      if (credentials) {
        if (Status s = device_auth->check_device(*id); !s) return send_status(res, req, s);
      }
    }
    auto s = twins::parse_twin_settings(*doc, is_patch, limits());
    if (!s) return send_status(res, req, s.status());
    if (is_patch) return call(req, res, *id, twins::PatchTwin{std::move(*s)});
    call(req, res, *id, twins::ProvisionTwin{std::move(*s)});
    if (revoke && res.status / 100 == 2) {
      // {"credentials": false}: the device's password stops working (if it had one).
      if (Status r = device_auth->revoke(*id); !r) return send_status(res, req, r);
    }
    if (credentials && res.status / 100 == 2) {
      // Issued after the twin is committed; the password is shown here, once, and kept only as
      // a hash. A PUT with credentials on an existing twin replaces its password.
      auto password = device_auth->issue(*id);
      if (!password) return send_status(res, req, password.status());
      json body = json::parse(res.body);
      body["credentials"] = {{"username", *id}, {"password", *password}};
      res.set_content(twins::to_text(body), "application/json");
    }
  }

  void update_desired(const httplib::Request& req, httplib::Response& res, bool replace) {
    auto id = twin_id(req, res);
    if (!id) return;
    std::optional<uint64_t> if_match;
    if (req.has_header("If-Match")) {
      auto m = twins::parse_if_match(req.get_header_value("If-Match"));
      if (!m) return send_status(res, req, m.status());
      if_match = *m;
    }
    auto doc = replace
                   ? body(req, res, {"application/json"}, false)
                   : body(req, res, {"application/merge-patch+json", "application/json"}, false);
    if (!doc) return;
    call(req, res, *id, twins::UpdateDesired{std::move(*doc), replace, if_match},
         Etag::kDesiredVersion);
  }

  void list_twins(const httplib::Request& req, httplib::Response& res) {
    size_t limit = 100;
    if (req.has_param("limit")) {
      auto v = parse_size(req.get_param_value("limit"), 1, 1000);
      if (!v) return send_problem(res, req, 400, "invalid_argument", "limit must be 1 to 1000");
      limit = *v;
    }
    const std::string cursor = req.get_param_value("cursor");
    if (!cursor.empty() && !twins::valid_device_id(cursor, limits())) {
      return send_problem(res, req, 400, "invalid_argument",
                          "cursor must be the next_cursor of a previous page");
    }
    auto page = store.list(cursor, limit + 1);
    if (!page) return send_status(res, req, page.status());
    json items = json::array();
    std::string last;
    for (size_t i = 0; i < page->size() && i < limit; ++i) {
      auto t = twins::from_record((*page)[i]);
      if (!t) return send_status(res, req, t.status());
      items.push_back(twins::twin_document(*t, rt.logic().stale_after_ms(*t)));
      last = t->id;
    }
    const bool more = page->size() > limit;
    send_json(res, 200, {{"items", std::move(items)}, {"next_cursor", more ? json(last) : json()}});
  }

  void list_commands(const httplib::Request& req, httplib::Response& res) {
    auto id = twin_id(req, res);
    if (!id) return;
    twins::ListCommands q;
    if (req.has_param("status")) {
      q.status = twins::parse_command_status(req.get_param_value("status"));
      if (!q.status) {
        return send_problem(res, req, 400, "invalid_argument",
                            "status must be one of queued, sent, succeeded, failed, rejected, "
                            "expired, timed_out, cancelled");
      }
    }
    if (req.has_param("limit")) {
      auto v = parse_size(req.get_param_value("limit"), 1, 1000);
      if (!v) return send_problem(res, req, 400, "invalid_argument", "limit must be 1 to 1000");
      q.limit = *v;
    }
    if (req.has_param("cursor")) {
      auto v = parse_size(req.get_param_value("cursor"), 0, 999'999'999);
      if (!v) {
        return send_problem(res, req, 400, "invalid_argument",
                            "cursor must be the next_cursor of a previous page");
      }
      q.after_seq = *v;
    }
    call(req, res, *id, q);
  }

  // Bearer-token check before routing (tokens are compared, never logged).
  httplib::Server::HandlerResponse authorize(const httplib::Request& req, httplib::Response& res) {
    using R = httplib::Server::HandlerResponse;
    if (options.tokens.empty() && options.read_tokens.empty()) return R::Unhandled;
    if (req.path == "/healthz" || req.path == "/readyz") return R::Unhandled;
    const std::string header = req.get_header_value("Authorization");
    const std::string token = header.rfind("Bearer ", 0) == 0 ? header.substr(7) : std::string();
    if (!token.empty() && any_matches(options.tokens, token)) return R::Unhandled;
    if (!token.empty() && any_matches(options.read_tokens, token)) {
      if (req.method == "GET" || req.method == "HEAD") return R::Unhandled;
      send_problem(res, req, 403, "forbidden",
                   "this token may only read (GET); changes need a token given with --api-token");
      return R::Handled;
    }
    res.set_header("WWW-Authenticate", "Bearer realm=\"doppel\"");
    send_problem(res, req, 401, "unauthorized",
                 token.empty() ? "send 'Authorization: Bearer <token>'; see --api-token"
                               : "the bearer token is not valid");
    return R::Handled;
  }

  HttpOptions options;
  twins::Runtime& rt;
  twins::TwinStore& store;
  Metrics& metrics;
  std::function<Readiness()> readiness;
  httplib::Server server;
  std::thread thread;
  int bound_port = 0;
  DeviceAuth* device_auth;
  Counter* responses[6] = {};
  Histogram* latency = nullptr;
};

HttpApi::HttpApi(HttpOptions options, twins::Runtime& runtime, twins::TwinStore& store,
                 Metrics& metrics, std::function<Readiness()> readiness, DeviceAuth* device_auth)
    : impl_(std::make_unique<Impl>(std::move(options), runtime, store, metrics,
                                   std::move(readiness), device_auth)) {}

HttpApi::~HttpApi() { stop(); }

Status HttpApi::start() {
  Impl& i = *impl_;
  if (i.options.port == 0) {
    i.bound_port = i.server.bind_to_any_port(i.options.host);
  } else {
    i.bound_port = i.server.bind_to_port(i.options.host, i.options.port) ? i.options.port : -1;
  }
  if (i.bound_port <= 0) {
    return Status(StatusCode::kUnavailable,
                  "cannot listen for HTTP on " + i.options.host + ":" +
                      std::to_string(i.options.port) +
                      " (in use, or not a local address); choose another with --http");
  }
  i.thread = std::thread([&i] { i.server.listen_after_bind(); });
  return Status::ok();
}

void HttpApi::stop() {
  if (!impl_) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int HttpApi::port() const { return impl_->bound_port; }

}  // namespace doppel::gateway
