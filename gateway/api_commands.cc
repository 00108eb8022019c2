// Commands of a twin: enqueue, list, read one, cancel (DESIGN §5).
#include "gateway/api_handlers.h"

namespace doppel::gateway {
namespace {

void enqueue(const ApiContext& ctx, const ExchangePtr& x) {
  auto doc = ctx.body(*x, {"application/json"}, false);
  if (!doc) return;
  auto cmd = twins::parse_command_request(*doc, ctx.limits());
  if (!cmd) return x->status(cmd.status());
  ctx.call(x, twins::EnqueueCommand{std::move(*cmd)});
}

void list_commands(const ApiContext& ctx, const ExchangePtr& x) {
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
  ctx.call(x, q);
}

}  // namespace

void add_command_routes(Router& router, const ApiContext* ctx) {
  auto twin = [ctx](TwinHandler f) { return twin_route(ctx, std::move(f)); };
  router.add("POST", "/v1/twins/{id}/commands", twin(enqueue));
  router.add("GET", "/v1/twins/{id}/commands", twin(list_commands));
  router.add("GET", "/v1/twins/{id}/commands/{command_id}",
             twin([](const ApiContext& c, const ExchangePtr& x) {
               c.call(x, twins::GetCommand{x->segments[4]});
             }));
  router.add("DELETE", "/v1/twins/{id}/commands/{command_id}",
             twin([](const ApiContext& c, const ExchangePtr& x) {
               c.call(x, twins::CancelCommand{x->segments[4]});
             }));
}

}  // namespace doppel::gateway
