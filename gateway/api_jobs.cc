// Jobs: create, list, read, their executions, cancel (README, "Jobs"). Every handler reads or
// writes the store, so all of them run on the server's blocking pools (creation by a target
// query on the fleet-query pool, as a fleet query). In a cluster a job belongs to the node that
// serves the partition of its id: creation and cancelling go there (forwarded like a twin's
// requests), reads come from the shared store on any node, and the owner's engine sends the
// actions for other nodes' twins through POST /v1/cluster/jobs/{id}/run (cluster_jobs.h).
#include "gateway/api_handlers.h"
#include "gateway/cluster.h"
#include "gateway/cluster_jobs.h"
#include "twins/job_engine.h"
#include "twins/jobs.h"

namespace doppel::gateway {
namespace {

twins::Cause cause_of(const Exchange& x) {
  return twins::Cause{twins::CauseSource::kApi, x.request_id, x.principal, {}, {}};
}

// The job id of /v1/jobs/{id}[/...]; false: a 400 was sent.
bool job_id(const ExchangePtr& x) {
  if (twins::valid_job_id(x->segments[2])) return true;
  x->problem(400, "invalid_id", "a job id is 1 to 64 characters of A-Z a-z 0-9 . _ : -");
  return false;
}

// limit= and cursor=; false: a 400 was sent.
bool page(const ExchangePtr& x, size_t& limit, std::string& cursor) {
  limit = 100;
  if (auto l = x->req.param("limit")) {
    auto v = parse_size(*l, 1, 1000);
    if (!v) {
      x->problem(400, "invalid_argument", "limit must be 1 to 1000");
      return false;
    }
    limit = *v;
  }
  cursor = x->req.param("cursor").value_or("");
  return true;
}

void answer(const ExchangePtr& x, const Result<twins::json>& r, int code = 200) {
  if (!r) return x->status(r.status());
  x->json_body(code, *r);
}

void create(const ApiContext& ctx, const ExchangePtr& x) {
  auto doc = ctx.body(*x, {"application/json"}, false, twins::max_job_spec_bytes(ctx.limits()));
  if (!doc) return;
  // A malformed target query is an invalid_query problem, with its column.
  if (doc->is_object() && doc->contains("target") && (*doc)["target"].is_object() &&
      (*doc)["target"].contains("query") && (*doc)["target"]["query"].is_string()) {
    auto where = twins::parse_query((*doc)["target"]["query"].get<std::string>());
    if (!where) {
      return x->problem(400, "invalid_query", "target.query: " + where.status().message());
    }
  }
  auto spec = twins::parse_job_spec(*doc, ctx.limits());
  if (!spec) return x->status(spec.status());
  if (ctx.cluster != nullptr && spec->id.empty()) {
    // The id decides the node that runs the job: chosen here, and sent along if forwarded.
    spec->id = twins::random_command_ids()();
    (*doc)["id"] = spec->id;
    x->req.body = twins::to_text(*doc);
  }
  const std::string id = spec->id;
  auto here = [spec = std::make_shared<twins::JobSpec>(std::move(*spec))](const ApiContext& c,
                                                                          const ExchangePtr& ex) {
    // A target query reads the fleet: it waits with the fleet queries, not before the feed.
    std::shared_ptr<void> ticket;
    if (spec->where && !(ticket = c.admit_query(*ex))) return;
    c.server->run_blocking(
        [&c, ex, spec, ticket]() mutable {
          auto created = c.jobs->create(*spec, cause_of(*ex));
          ticket.reset();
          answer(ex, created, 201);
        },
        ticket ? BlockingPool::kQuery : BlockingPool::kGeneral);
  };
  route_to_owner(ctx, x, id, here);
}

void list(const ApiContext& ctx, const ExchangePtr& x) {
  std::optional<twins::JobStatus> status;
  if (auto s = x->req.param("status")) {
    status = twins::parse_job_status(*s);
    if (!status) {
      return x->problem(400, "invalid_argument",
                        "status must be one of running, completed, cancelled, aborted");
    }
  }
  size_t limit = 0;
  std::string cursor;
  if (!page(x, limit, cursor)) return;
  ctx.server->run_blocking(
      [&ctx, x, status, limit, cursor] { answer(x, ctx.jobs->list(status, cursor, limit)); });
}

void get(const ApiContext& ctx, const ExchangePtr& x) {
  if (!job_id(x)) return;
  ctx.server->run_blocking([&ctx, x] { answer(x, ctx.jobs->get(x->segments[2])); });
}

void executions(const ApiContext& ctx, const ExchangePtr& x) {
  if (!job_id(x)) return;
  std::optional<twins::ExecStatus> status;
  if (auto s = x->req.param("status")) {
    status = twins::parse_exec_status(*s);
    if (!status) {
      return x->problem(400, "invalid_argument",
                        "status must be one of pending, in_progress, succeeded, failed, "
                        "timed_out, cancelled");
    }
  }
  size_t limit = 0;
  std::string cursor;
  if (!page(x, limit, cursor)) return;
  ctx.server->run_blocking([&ctx, x, status, limit, cursor] {
    answer(x, ctx.jobs->executions(x->segments[2], status, cursor, limit));
  });
}

void cancel(const ApiContext& ctx, const ExchangePtr& x) {
  if (!job_id(x)) return;
  route_to_owner(ctx, x, x->segments[2], [](const ApiContext& c, const ExchangePtr& ex) {
    c.server->run_blocking(
        [&c, ex] { answer(ex, c.jobs->cancel(ex->segments[2], cause_of(*ex))); });
  });
}

// Another node's dispatch of its job to twins this node serves (cluster_jobs.h): only with the
// cluster's signature. {"created_at", "twins": [...]} -> {"results": [{"twin", "code",
// "message"}]}, once every twin's shard has answered.
void run_for_peer(const ApiContext& ctx, const ExchangePtr& x) {
  if (ctx.cluster == nullptr) {
    return x->problem(404, "not_found", "this doppeld is not a cluster node");
  }
  if (ctx.cluster->forwarded(x->req, x->request_id) != std::optional<bool>(true)) {
    return x->problem(403, "forbidden",
                      "only another node of this cluster may dispatch a job here (a "
                      "Doppel-Forwarded signature made with the cluster's secret)");
  }
  if (!twins::valid_job_id(x->segments[3])) {
    return x->problem(400, "invalid_id", "a job id is 1 to 64 characters of A-Z a-z 0-9 . _ : -");
  }
  const twins::json doc = twins::json::parse(x->req.body, nullptr, false);
  if (!doc.is_object() || !doc.contains("created_at") || !doc["created_at"].is_number_integer() ||
      !doc.contains("twins") || !doc["twins"].is_array() || doc["twins"].size() > 10000) {
    return x->problem(400, "malformed",
                      "expected {\"created_at\": integer, \"twins\": [at most 10,000 ids]}");
  }
  std::vector<std::string> twins;
  for (const auto& t : doc["twins"]) {
    if (!t.is_string()) return x->problem(400, "malformed", "twins: ids are strings");
    twins.push_back(t.get<std::string>());
  }
  ctx.server->run_blocking([&ctx, x, created_at = doc["created_at"].get<twins::Millis>(),
                            twins = std::move(twins)]() mutable {
    ctx.jobs->run_for_peer(x->segments[3], created_at, std::move(twins),
                           [x](const twins::JobEngine::PeerResults& results) {
                             x->json_body(200, peer_results_json(results));
                           });
  });
}

}  // namespace

void add_job_routes(Router& router, const ApiContext* ctx) {
  auto route = [ctx](void (*f)(const ApiContext&, const ExchangePtr&)) -> RouteHandler {
    if (ctx == nullptr) return {};
    return [ctx, f](const ExchangePtr& x) {
      if (ctx->jobs == nullptr) {
        return x->problem(503, "unavailable", "this gateway runs no job engine");
      }
      f(*ctx, x);
    };
  };
  router.add("POST", "/v1/jobs", route(create));
  router.add("GET", "/v1/jobs", route(list));
  router.add("GET", "/v1/jobs/{id}", route(get));
  router.add("GET", "/v1/jobs/{id}/twins", route(executions));
  router.add("POST", "/v1/jobs/{id}/cancel", route(cancel));
  // Open to the router: the handler accepts nothing but the cluster's signature.
  router.add("POST", "/v1/cluster/jobs/{id}/run", route(run_for_peer), Router::Access::kOpen);
}

}  // namespace doppel::gateway
