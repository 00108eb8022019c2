// The service's own resources: liveness, readiness, metrics and the API description.
#include "gateway/api_handlers.h"
#include "gateway/cluster.h"
#include "gateway/http_api.h"
#include "gateway/openapi.h"

namespace doppel::gateway {
namespace {

void ready(const ApiContext& ctx, Exchange& x) {
  const Readiness r = ctx.readiness();
  if (r.store_open && r.broker_connected) {
    twins::json body = {{"status", r.broker_dropping ? "degraded" : "ready"},
                        {"store", "open"},
                        {"broker", "connected"},
                        {"broker_dropped_messages", r.broker_dropped}};
    if (ctx.cluster != nullptr) {
      body["cluster"] = {{"node", ctx.cluster->incarnation()},
                         {"partitions", ctx.cluster->serving()}};
    }
    if (r.broker_dropping) {
      body["detail"] =
          "the broker is dropping messages (its queue for a client is full): device reports are "
          "being lost; see README, Overload";
    }
    return x.json_body(200, body);
  }
  std::string detail = "not ready:";
  if (!r.store_open) {
    detail +=
        " the store is unavailable (closed; its database server unreachable: reconnecting; or "
        "another doppeld claimed its database: see the log);";
  }
  if (r.broker_refused) {
    detail +=
        " the broker refused doppeld's subscriptions to the device topics (its ACL: allow "
        "doppeld's "
        "broker user to subscribe to them; doppeld subscribes again when it reconnects);";
  } else if (r.broker_subscribing) {
    detail += " connected to the broker, waiting for it to grant the device topics' subscriptions;";
  } else if (!r.broker_connected) {
    detail += " the broker is not connected (reconnecting";
    if (!r.broker_state.empty()) detail += "; embedded broker " + r.broker_state;
    detail += ");";
  }
  detail.pop_back();
  x.problem(503, "unavailable", detail);
}

}  // namespace

void add_service_routes(Router& router, const ApiContext* ctx) {
  using Access = Router::Access;
  router.add(
      "GET", "/healthz",
      [](const ExchangePtr& x) {
        x->json_body(200, {{"status", "ok"}});
      },
      Access::kOpen);
  router.add(
      "GET", "/readyz", [ctx](const ExchangePtr& x) { ready(*ctx, *x); }, Access::kOpen);
  router.add("GET", "/metrics", [ctx](const ExchangePtr& x) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = ctx->metrics->render();
    x->send(std::move(r));
  });
  router.add("GET", "/v1/cluster", [ctx](const ExchangePtr& x) {
    if (ctx->cluster == nullptr) {
      return x->problem(
          404, "not_found",
          "this doppeld is not a cluster node (doppeld --cluster: docs/scale-out.md)");
    }
    x->json_body(200, ctx->cluster->describe());
  });
  router.add(
      "GET", "/v1/openapi.json",
      [](const ExchangePtr& x) {
        HttpResponse r;
        r.content_type = "application/json";
        r.body = openapi_document();
        x->send(std::move(r));
      },
      Access::kOpen);
}

}  // namespace doppel::gateway
