#include "gateway/http_api.h"

#include "gateway/api_handlers.h"
#include "gateway/feed.h"
#include "gateway/http_auth.h"
#include "gateway/http_router.h"
#include "twins/fleet_reads.h"

namespace doppel::gateway {
namespace {

// Every route, in one table; `ctx` null: the table only.
void add_all_routes(Router& router, const ApiContext* ctx) {
  add_service_routes(router, ctx);
  add_twin_routes(router, ctx);
  add_command_routes(router, ctx);
  add_debug_routes(router, ctx);
  add_event_routes(router, ctx);
  add_job_routes(router, ctx);
  add_console_routes(router);
}

}  // namespace

struct HttpApi::Impl {
  Impl(HttpOptions o, twins::Runtime& rt, twins::TwinStore& store, Metrics& metrics,
       std::function<Readiness()> readiness, DeviceCredentials* device_auth)
      : options(std::move(o)),
        auth(options.tokens, options.read_tokens, options.host),
        query_gate(options.queries.per_client),
        reads(store, rt.logic()) {
    HttpServerOptions so = options.server;
    so.host = options.host;
    so.port = options.port;
    server = std::make_unique<HttpServer>(
        so,
        [this](HttpRequest&& req, Responder respond) {
          router.dispatch(std::move(req), std::move(respond),
                          [this](Exchange& x, Router::Access access) {
                            return auth.refuse(x.req, access == Router::Access::kOpen, x.principal);
                          });
        },
        metrics);
    ctx.rt = &rt;
    ctx.store = &store;
    ctx.metrics = &metrics;
    ctx.readiness = std::move(readiness);
    ctx.device_auth = device_auth;
    ctx.jobs = options.jobs;
    ctx.cluster = options.cluster;
    ctx.server = server.get();
    ctx.stream_buffer_bytes = so.stream_buffer_bytes;
    ctx.queries = options.queries;
    ctx.reads = &reads;
    ctx.query_gate = &query_gate;
    if (options.feed == nullptr) {
      own_feed = std::make_unique<FeedHub>();
      store.on_events([hub = own_feed.get()](uint64_t, const std::vector<twins::EventRecord>& e) {
        hub->notify(e);
      });
    }
    ctx.feed = options.feed != nullptr ? options.feed : own_feed.get();
    add_all_routes(router, &ctx);
  }

  HttpOptions options;
  std::unique_ptr<FeedHub> own_feed;
  ApiAuth auth;
  QueryGate query_gate;
  twins::FleetReads reads;
  ApiContext ctx;
  Router router;
  std::unique_ptr<HttpServer> server;
};

HttpApi::HttpApi(HttpOptions options, twins::Runtime& runtime, twins::TwinStore& store,
                 Metrics& metrics, std::function<Readiness()> readiness,
                 DeviceCredentials* device_auth)
    : impl_(std::make_unique<Impl>(std::move(options), runtime, store, metrics,
                                   std::move(readiness), device_auth)) {}

HttpApi::~HttpApi() { stop(); }

Status HttpApi::start() { return impl_->server->start(); }

void HttpApi::stop() {
  if (impl_) impl_->server->stop();
}

int HttpApi::port() const { return impl_->server->port(); }

std::vector<std::pair<std::string, std::string>> HttpApi::routes() {
  Router router;
  add_all_routes(router, nullptr);
  return router.routes();
}

}  // namespace doppel::gateway
