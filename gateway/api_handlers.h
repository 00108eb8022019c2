// The handlers of the operator API, one file per resource, and what they share (ApiContext):
//   api_service.cc   /healthz, /readyz, /metrics, /v1/openapi.json
//   api_twins.cc     /v1/twins (fleet queries), /v1/fleet/count, /v1/twins/{id},
//                    /v1/twins/{id}/desired
//   api_commands.cc  /v1/twins/{id}/commands[/{command_id}]
//   api_events.cc    /v1/events (the change feed), /v1/twins/{id}/history
//   api_jobs.cc      /v1/jobs[/{id}[/twins|/cancel]]
//   api_debug.cc     /v1/debug/ticks (the streaming example the tests use)
//   api_console.cc   /, /console/... (the web console's files, compiled in)
// A handler validates its request (ids, bodies, limits, content types), runs it against its twin
// through the runtime and answers when the runtime does — after the change it caused is
// committed, on the store's writer thread — so it never blocks a network thread. Store reads and
// credential work go to the server's blocking pool.
//
// Thread-safety: the context is immutable after set-up; handlers run on any thread.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/http_router.h"
#include "gateway/query_gate.h"
#include "twins/metrics.h"
#include "twins/ports.h"
#include "twins/requests.h"
#include "twins/runtime.h"

namespace doppel::twins {
class FleetReads;
class JobEngine;
}  // namespace doppel::twins

namespace doppel::gateway {

class ClusterNode;
class DeviceCredentials;
class FeedHub;
struct Readiness;

struct ApiContext {
  twins::Runtime* rt = nullptr;
  twins::TwinStore* store = nullptr;
  Metrics* metrics = nullptr;
  std::function<Readiness()> readiness;
  DeviceCredentials* device_auth = nullptr;  // optional: credentials on PUT/DELETE of a twin
  HttpServer* server = nullptr;              // run_blocking()
  FeedHub* feed = nullptr;                   // wakes change-feed streams
  twins::JobEngine* jobs = nullptr;          // optional: /v1/jobs answers 503 without
  ClusterNode* cluster = nullptr;            // a cluster node: forwards, /v1/cluster
  const twins::FleetReads* reads = nullptr;  // fleet query pages and as-of reads, as documents
  size_t stream_buffer_bytes = 1 << 20;
  QueryOptions queries;
  QueryGate* query_gate = nullptr;

  // A fleet query's place for this client (see QueryGate), or null with 429 already sent.
  std::shared_ptr<void> admit_query(Exchange& x) const;
  // The budget of a fleet read that starts now.
  twins::ReadBudget query_budget() const;
  // A failed fleet read as its answer: a timeout says what to do about it.
  void query_failed(Exchange& x, const Status& s) const;

  const twins::Limits& limits() const { return rt->logic().policy().limits; }

  // Which version a response's ETag carries.
  enum class Etag { kVersion, kDesiredVersion };
  // Runs `request` on the twin named by segment 2; answers when the runtime does (after the
  // commit). With `then`, it gets the reply instead (on the answering thread; must not block).
  void call(const ExchangePtr& x, twins::ApiRequest request, Etag etag = Etag::kVersion,
            const char* body_field = nullptr,
            std::function<void(const ExchangePtr&, twins::ApiReply)> then = nullptr) const;
  // A runtime reply as a response: its status, the body (or one field of it) and the ETag.
  static HttpResponse to_response(twins::ApiReply r, Etag etag, const char* body_field,
                                  const std::string& path);
  // The JSON body, or an error already sent (415 for another media type, 400 for bad JSON, 413
  // over `max_bytes`: 0 means a state document's payload, limits().max_payload_bytes()). An
  // empty body is null when `allow_empty`.
  std::optional<twins::json> body(Exchange& x, std::initializer_list<std::string_view> media_types,
                                  bool allow_empty, size_t max_bytes = 0) const;
};

// A handler of a route below /v1/twins/{id}: the id is checked first (400 if invalid). On a
// cluster node, a request for a twin served by another node goes to that node, unless
// `store_read` (the handler reads only the shared store, which any node may). With no context
// (the route table only), an empty handler.
using TwinHandler = std::function<void(const ApiContext&, const ExchangePtr&)>;
RouteHandler twin_route(const ApiContext* ctx, TwinHandler handler, bool store_read = false);
// Runs `handler` where the partition of `key` (a twin's or a job's id) is served: here outside a
// cluster; in one, here or forwarded to its owner as twin_route does.
void route_to_owner(const ApiContext& ctx, const ExchangePtr& x, const std::string& key,
                    const TwinHandler& handler);

// A decimal query parameter within [lo, hi], or nullopt.
std::optional<size_t> parse_size(const std::string& s, size_t lo, size_t hi);
// A decimal from 0 to 2^63 - 1 (event seqs, which are SQLite integers), or nullopt.
std::optional<uint64_t> parse_u64(const std::string& s);

// `ctx` may be null when only the route table is wanted (HttpApi::routes()).
void add_service_routes(Router& router, const ApiContext* ctx);
void add_twin_routes(Router& router, const ApiContext* ctx);
void add_command_routes(Router& router, const ApiContext* ctx);
void add_debug_routes(Router& router, const ApiContext* ctx);
void add_event_routes(Router& router, const ApiContext* ctx);
void add_job_routes(Router& router, const ApiContext* ctx);
void add_console_routes(Router& router);

}  // namespace doppel::gateway
