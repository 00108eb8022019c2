// Jobs: create, list, read, their executions, cancel (README, "Jobs"). Every handler reads or
// writes the store, so all of them run on the server's blocking pools (creation by a target
// query on the fleet-query pool, as a fleet query).
#include "gateway/api_handlers.h"
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
  // A target query reads the fleet: it waits with the fleet queries, not before the feed.
  std::shared_ptr<void> ticket;
  if (spec->where && !(ticket = ctx.admit_query(*x))) return;
  ctx.server->run_blocking(
      [&ctx, x, spec = std::move(*spec), ticket]() mutable {
        auto created = ctx.jobs->create(std::move(spec), cause_of(*x));
        ticket.reset();
        answer(x, created, 201);
      },
      ticket ? BlockingPool::kQuery : BlockingPool::kGeneral);
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
  ctx.server->run_blocking(
      [&ctx, x] { answer(x, ctx.jobs->cancel(x->segments[2], cause_of(*x))); });
}

}  // namespace

void add_job_routes(Router& router, const ApiContext* ctx) {
  auto route = [ctx](void (*f)(const ApiContext&, const ExchangePtr&)) -> RouteHandler {
    if (ctx == nullptr) return {};
    return [ctx, f](const ExchangePtr& x) {
      if (ctx->jobs == nullptr) {
        return x->problem(503, "unavailable",
                          ctx->cluster != nullptr
                              ? "jobs do not run in a cluster yet (docs/scale-out.md): run them "
                                "on a single doppeld"
                              : "this gateway runs no job engine");
      }
      f(*ctx, x);
    };
  };
  router.add("POST", "/v1/jobs", route(create));
  router.add("GET", "/v1/jobs", route(list));
  router.add("GET", "/v1/jobs/{id}", route(get));
  router.add("GET", "/v1/jobs/{id}/twins", route(executions));
  router.add("POST", "/v1/jobs/{id}/cancel", route(cancel));
}

}  // namespace doppel::gateway
