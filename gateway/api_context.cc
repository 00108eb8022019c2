#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <thread>

#include "gateway/api_handlers.h"
#include "gateway/cluster.h"
#include "twins/partition.h"

namespace doppel::gateway {
namespace {

std::string media_type(const HttpRequest& req) {
  std::string ct = req.header("Content-Type").value_or("");
  ct = ct.substr(0, ct.find(';'));
  ct.erase(std::remove_if(ct.begin(), ct.end(), [](unsigned char c) { return std::isspace(c); }),
           ct.end());
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
  return ct;
}

}  // namespace

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

std::optional<uint64_t> parse_u64(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  // Seqs are SQLite integers: 2^63 and above would wrap negative there.
  if (v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return v;
}

HttpResponse ApiContext::to_response(twins::ApiReply r, Etag etag, const char* body_field,
                                     const std::string& path) {
  if (!r.status) return status_response(r.status, path);
  int status = 200;
  switch (r.kind) {
    case twins::ReplyKind::kOk:
      status = 200;
      break;
    case twins::ReplyKind::kCreated:
      status = 201;
      break;
    case twins::ReplyKind::kAccepted:
      status = 202;
      break;
    case twins::ReplyKind::kNoContent: {
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

void ApiContext::call(const ExchangePtr& x, twins::ApiRequest request, Etag etag,
                      const char* body_field,
                      std::function<void(const ExchangePtr&, twins::ApiReply)> then) const {
  const std::string id = x->segments[2];
  rt->call(
      id, std::move(request),
      [x, etag, body_field, then = std::move(then)](twins::ApiReply r) mutable {
        if (then) return then(x, std::move(r));
        x->send(to_response(std::move(r), etag, body_field, x->req.path));
      },
      twins::Cause{twins::CauseSource::kApi, x->request_id, x->principal, {}, {}});
}

std::optional<twins::json> ApiContext::body(Exchange& x,
                                            std::initializer_list<std::string_view> media_types,
                                            bool allow_empty, size_t max_bytes) const {
  const std::string mt = media_type(x.req);
  if (!mt.empty() && std::find(media_types.begin(), media_types.end(), mt) == media_types.end()) {
    std::string allowed;
    for (auto m : media_types) allowed += (allowed.empty() ? "" : ", ") + std::string(m);
    x.problem(415, "unsupported_media_type",
              "Content-Type '" + mt + "' is not accepted here; use " + allowed);
    return std::nullopt;
  }
  if (x.req.body.empty()) {
    if (allow_empty) return twins::json();
    x.problem(400, "malformed", "the request body is empty; expected JSON");
    return std::nullopt;
  }
  auto doc = twins::parse_json(x.req.body, max_bytes > 0 ? max_bytes : limits().max_payload_bytes(),
                               limits().max_depth + 2);
  if (!doc) {
    x.status(doc.status());
    return std::nullopt;
  }
  return std::move(*doc);
}

std::shared_ptr<void> ApiContext::admit_query(Exchange& x) const {
  const std::string client = x.principal.empty() ? "address " + x.req.peer : x.principal;
  auto ticket = query_gate->admit(client);
  if (!ticket) {
    HttpResponse r = problem_response(
        429, "too_many_queries",
        "this client already runs " + std::to_string(query_gate->per_client()) +
            " fleet queries (--query-max-per-client); send the next when one has answered",
        x.req.path);
    r.headers.emplace_back("Retry-After", "1");
    x.send(std::move(r));
  }
  return ticket;
}

twins::ReadBudget ApiContext::query_budget() const {
  twins::ReadBudget b;
  b.deadline = std::chrono::steady_clock::now() + queries.timeout;
  b.max_groups = queries.max_groups;
  return b;
}

void ApiContext::query_failed(Exchange& x, const Status& s) const {
  if (s.code() != StatusCode::kTimeout) return x.status(s);
  x.problem(503, "timeout",
            "the query ran longer than " + std::to_string(queries.timeout.count()) +
                " ms (--query-timeout-s) and was stopped; narrow q=, or keep an index on the "
                "fields it filters or sorts by (doppeld --index reported.fw)");
}

namespace {

// A cluster node serves the twins of its partitions here, and sends the rest to their owner: a
// request another node forwarded is answered here or refused (503, retry), never sent on again.
void route_in_cluster(const ApiContext& ctx, const ExchangePtr& x, const std::string& key,
                      const TwinHandler& handler, int attempt = 0);

// Runs the handler here. The partition may stop being served before the twin's shard takes the
// request (it was being handed over): the shard then answers not_owner, and a request a client
// sent here directly is routed again — to the new owner — instead (at most a few times).
void serve_here(const ApiContext& ctx, const ExchangePtr& x, const std::string& key,
                const TwinHandler& handler, bool forwarded, int attempt) {
  if (!forwarded && attempt < 3) {
    Responder original = x->respond;
    std::weak_ptr<Exchange> weak = x;  // the responder must not keep its own exchange alive
    x->respond = [&ctx, weak, key, handler, original, attempt](HttpResponse r) {
      auto again = weak.lock();
      const bool moved =
          r.status == 503 && std::any_of(r.headers.begin(), r.headers.end(),
                                         [](const auto& h) { return h.first == kNotOwnerHeader; });
      if (!again || !moved) return original(std::move(r));
      // Restoring the responder destroys this closure, which is running: take what the next
      // attempt needs out of it first (reading a capture afterwards crashed a node under load).
      const ApiContext& context = ctx;
      TwinHandler retry = handler;
      // NOLINTNEXTLINE(performance-unnecessary-copy-initialization): `key` dies with the closure
      const std::string routed_by = key;
      const int next = attempt + 1;
      again->respond = original;
      route_in_cluster(context, again, routed_by, retry, next);
    };
  }
  handler(ctx, x);
}

void route_in_cluster(const ApiContext& ctx, const ExchangePtr& x, const std::string& key,
                      const TwinHandler& handler, int attempt) {
  const uint32_t partition = twins::partition_of(key);
  const std::optional<bool> forwarded = ctx.cluster->forwarded(x->req, x->request_id);
  if (forwarded && !*forwarded) {
    return x->problem(403, "forbidden",
                      "the request's Doppel-Forwarded signature does not verify: every node of a "
                      "cluster must have the same --cluster-secret-file (and clocks within 60 s)");
  }
  if (ctx.cluster->serves(partition))
    return serve_here(ctx, x, key, handler, forwarded.has_value(), attempt);
  auto not_owner = [x, key, partition] {
    HttpResponse r = status_response(
        Status(StatusCode::kNotOwner,
               "'" + key + "' belongs to partition " + std::to_string(partition) +
                   ", whose owner is changing (a node joined, left or failed); retry"),
        x->req.path);
    x->send(std::move(r));
  };
  if (forwarded) return not_owner();  // the sender retries
  // To the owner; while the owner is changing (known to nobody, not up, or no longer serving),
  // again every 100 ms for up to two leases, so that a hand-over costs the caller time, not an
  // error. Then here, if this node took the partition meanwhile.
  ctx.server->run_blocking([&ctx, x, key, partition, handler, not_owner, attempt] {
    const auto give_up = std::chrono::steady_clock::now() + 2 * ctx.cluster->lease();
    while (true) {
      if (ctx.cluster->serves(partition)) return serve_here(ctx, x, key, handler, false, attempt);
      if (auto answer = ctx.cluster->forward(x->req, x->request_id, partition)) {
        return x->send(std::move(*answer));
      }
      if (std::chrono::steady_clock::now() >= give_up) return not_owner();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

}  // namespace

RouteHandler twin_route(const ApiContext* ctx, TwinHandler handler, bool store_read) {
  if (ctx == nullptr) return nullptr;
  return [ctx, handler = std::move(handler), store_read](const ExchangePtr& x) {
    if (Status s = twins::check_device_id(x->segments[2], ctx->limits()); !s) {
      return x->status(s);
    }
    if (ctx->cluster != nullptr && !store_read) {
      return route_in_cluster(*ctx, x, x->segments[2], handler);
    }
    handler(*ctx, x);
  };
}

void route_to_owner(const ApiContext& ctx, const ExchangePtr& x, const std::string& key,
                    const TwinHandler& handler) {
  if (ctx.cluster == nullptr) return handler(ctx, x);
  route_in_cluster(ctx, x, key, handler);
}

}  // namespace doppel::gateway
