// Twins and their desired state: fleet queries and counts, provision (with device credentials),
// settings, delete, read (now or as of a version or moment), and desired-state changes with
// If-Match (DESIGN §5).
#include "gateway/api_handlers.h"
#include "gateway/device_credentials.h"
#include "twins/fleet_reads.h"
#include "twins/log.h"
#include "twins/query.h"

namespace doppel::gateway {
namespace {

using Etag = ApiContext::Etag;

// `doc` cut down to `fields` (dotted paths into the document; the id always).
twins::json project(const twins::json& doc, const std::vector<std::vector<std::string>>& fields) {
  twins::json out = {{"id", doc["id"]}};
  for (const auto& path : fields) {
    const twins::json* v = &doc;
    for (const auto& seg : path) {
      if (!v->is_object() || !v->contains(seg)) {
        v = nullptr;
        break;
      }
      v = &(*v)[seg];
    }
    if (v == nullptr) continue;
    twins::json* o = &out;
    for (size_t i = 0; i + 1 < path.size(); ++i) {
      if (!o->contains(path[i]) || !(*o)[path[i]].is_object())
        (*o)[path[i]] = twins::json::object();
      o = &(*o)[path[i]];
    }
    (*o)[path.back()] = *v;
  }
  return out;
}

// The q= of a fleet query (every twin when absent); false: a 400 was sent.
bool query_param(Exchange& x, std::shared_ptr<twins::QueryExpr>& out) {
  auto q = x.req.param("q");
  auto e = twins::parse_query(q.value_or(""));
  if (!e) {
    x.problem(400, "invalid_query", e.status().message());
    return false;
  }
  out = std::shared_ptr<twins::QueryExpr>(std::move(*e));
  return true;
}

// GET /v1/twins?q=&order_by=&limit=&cursor=&fields= (README, "Fleet queries"). In id order the
// cursor is the last id; in any other order an opaque keyset position.
void list_twins(const ApiContext& ctx, const ExchangePtr& x) {
  size_t limit = 100;
  if (auto l = x->req.param("limit")) {
    auto v = parse_size(*l, 1, 1000);
    if (!v) return x->problem(400, "invalid_argument", "limit must be 1 to 1000");
    limit = *v;
  }
  std::shared_ptr<twins::QueryExpr> where;
  if (!query_param(*x, where)) return;
  auto order = twins::parse_query_order(x->req.param("order_by").value_or(""));
  if (!order) return x->problem(400, "invalid_query", "order_by: " + order.status().message());
  const bool by_id = order->field.name == "id" && !order->descending;
  std::optional<twins::QueryCursor> after;
  if (auto c = x->req.param("cursor"); c && !c->empty()) {
    if (by_id) {
      if (!twins::valid_device_id(*c, ctx.limits())) {
        return x->problem(400, "invalid_argument",
                          "cursor must be the next_cursor of a previous page");
      }
      after = twins::QueryCursor{twins::json(*c), *c};
    } else {
      auto parsed = twins::parse_cursor(*c);
      if (!parsed) return x->status(parsed.status());
      after = std::move(*parsed);
    }
  }
  std::vector<std::vector<std::string>> fields;
  if (auto f = x->req.param("fields")) {
    for (size_t at = 0; at <= f->size();) {
      const size_t comma = std::min(f->find(',', at), f->size());
      const std::string name = f->substr(at, comma - at);
      at = comma + 1;
      if (name.empty()) continue;
      std::vector<std::string> path;
      for (size_t s = 0; s <= name.size();) {
        const size_t dot = std::min(name.find('.', s), name.size());
        path.push_back(name.substr(s, dot - s));
        s = dot + 1;
      }
      for (const auto& seg : path) {
        if (seg.empty() || seg.size() > 128) {
          return x->problem(400, "invalid_argument",
                            "fields is a comma-separated list of dotted paths into the twin "
                            "document (desired.mode,liveness.state); '" +
                                name + "' is not one");
        }
      }
      fields.push_back(std::move(path));
    }
    if (fields.size() > 64) return x->problem(400, "invalid_argument", "at most 64 fields");
  }
  // A store read: off the network threads. Listing in id order without q= reads a page of the
  // primary key; anything else may scan the fleet: a fleet query (its own pool, its budget).
  const bool scan = by_id ? where->op != twins::QueryExpr::Op::kTrue : true;
  std::shared_ptr<void> ticket;
  if (scan && !(ticket = ctx.admit_query(*x))) return;
  ctx.server->run_blocking(
      [&ctx, x, where, order = std::move(*order), after, limit, by_id, fields = std::move(fields),
       ticket]() mutable {
        twins::TwinQuery q;
        q.where = where.get();
        q.order = order;
        q.limit = limit;
        q.after = after;
        if (ticket) q.budget = ctx.query_budget();
        auto page = ctx.reads->query(q);
        ticket.reset();
        if (!page) return ctx.query_failed(*x, page.status());
        twins::json items = twins::json::array();
        for (auto& doc : page->items) {
          items.push_back(fields.empty() ? std::move(doc) : project(doc, fields));
        }
        twins::json next;
        if (page->next) {
          next = by_id ? twins::json(page->next->id) : twins::json(twins::cursor_text(*page->next));
        }
        x->json_body(200, {{"items", std::move(items)}, {"next_cursor", std::move(next)}});
      },
      ticket ? BlockingPool::kQuery : BlockingPool::kGeneral);
}

// GET /v1/fleet/count?q=&group_by=
void count_twins(const ApiContext& ctx, const ExchangePtr& x) {
  std::shared_ptr<twins::QueryExpr> where;
  if (!query_param(*x, where)) return;
  std::optional<twins::QueryField> group_by;
  if (auto g = x->req.param("group_by")) {
    auto f = twins::parse_query_field(*g);
    if (!f) return x->problem(400, "invalid_query", "group_by: " + f.status().message());
    group_by = std::move(*f);
  }
  auto ticket = ctx.admit_query(*x);
  if (!ticket) return;
  ctx.server->run_blocking(
      [&ctx, x, where, group_by, ticket]() mutable {
        auto counted = ctx.store->count_where(*where, group_by, ctx.query_budget());
        ticket.reset();
        if (!counted) return ctx.query_failed(*x, counted.status());
        twins::json body = {{"count", counted->count}};
        if (group_by) {
          twins::json groups = twins::json::array();
          for (const auto& g : counted->groups)
            groups.push_back({{"value", g.value}, {"count", g.count}});
          body["groups"] = std::move(groups);
          // More values than --query-max-groups: the smallest groups are left out (their twins
          // are still in "count").
          body["truncated"] = counted->truncated;
        }
        x->json_body(200, body);
      },
      BlockingPool::kQuery);
}

// What a PUT asks of the device's broker identity besides provisioning the twin.
struct Identity {
  bool password = false;     // {"credentials": true}: a new password
  bool certificate = false;  // {"certificate": true | {"csr": ...}}: a new certificate
  std::string csr;           // the device's own request, when it sent one
  bool revoke = false;       // credentials or certificate false: revoke them all
};

// Reads "credentials" and "certificate" out of a PUT body (they are not twin settings).
// Answers the problem itself and returns nullopt when either is malformed or not offered.
std::optional<Identity> identity_of(const ApiContext& ctx, const ExchangePtr& x, twins::json& doc,
                                    const std::string& id) {
  Identity want;
  if (!doc.is_object()) return want;
  if (doc.contains("credentials")) {
    const twins::json& c = doc["credentials"];
    if (!c.is_boolean()) {
      x->problem(400, "invalid_argument", "credentials must be true or false");
      return std::nullopt;
    }
    want.password = c.get<bool>();
    want.revoke |= !want.password;
    doc.erase("credentials");
  }
  if (doc.contains("certificate")) {
    const twins::json& c = doc["certificate"];
    if (c.is_boolean()) {
      want.certificate = c.get<bool>();
      want.revoke |= !want.certificate;
    } else if (c.is_object() && c.size() == 1 && c.contains("csr") && c["csr"].is_string()) {
      want.certificate = true;
      want.csr = c["csr"].get<std::string>();
    } else {
      x->problem(400, "invalid_argument",
                 "certificate must be true (a new key pair and certificate), {\"csr\": \"<PEM "
                 "certificate signing request, CN = the device id>\"} or false (revoke)");
      return std::nullopt;
    }
    doc.erase("certificate");
  }
  if (want.revoke && ctx.device_auth == nullptr) want.revoke = false;  // nothing to revoke
  if ((want.password || want.certificate) && ctx.device_auth == nullptr) {
    x->problem(400, "invalid_argument",
               "this gateway does not manage device credentials; start doppeld with "
               "--device-auth (passwords) or --device-auth x509 (certificates), embedded broker");
    return std::nullopt;
  }
  if (want.certificate && !ctx.device_auth->has_ca()) {
    x->problem(400, "invalid_argument",
               "this gateway issues passwords, not certificates; start doppeld with "
               "--device-auth x509 (and --broker-tls-cert/--broker-tls-key)");
    return std::nullopt;
  }
  // Refused before anything changes: a refused request must not create the twin.
  if (want.password || want.certificate) {
    if (Status s = ctx.device_auth->check_device(id); !s) {
      x->status(s);
      return std::nullopt;
    }
  }
  return want;
}

// A revocation as change events: the password, the certificates (how many).
void revocation_changes(const DeviceCredentials::Revoked& revoked,
                        std::vector<twins::CredentialChange>& out) {
  if (revoked.password) out.push_back({"password", "revoked", "", 1});
  if (revoked.certificates > 0) {
    out.push_back({"certificate", "revoked", "", revoked.certificates});
  }
}

// Records `record` in the twin's feed, then sends `answer`. The credentials exist whether or not
// the record commits (a key returned once must not be lost to a failed event write): a failure
// is logged and the answer still sent.
void answer_after_record(const ApiContext& ctx, const ExchangePtr& x,
                         twins::RecordCredentials record, twins::ApiReply answer) {
  auto send = [answer = std::move(answer)](const ExchangePtr& ex) mutable {
    ex->send(ApiContext::to_response(std::move(answer), Etag::kVersion, nullptr, ex->req.path));
  };
  if (record.changes.empty()) return send(x);
  ctx.call(x, std::move(record), Etag::kVersion, nullptr,
           [send = std::move(send)](const ExchangePtr& ex, const twins::ApiReply& r) mutable {
             if (!r.status) {
               log_warn("the credentials of twin '" + ex->segments[2] +
                        "' changed but could not be recorded in its change feed: " +
                        r.status.to_string());
             }
             send(ex);
           });
}

// PUT (provision, optionally with credentials or a certificate) and PATCH (settings) of a twin.
void settings(const ApiContext& ctx, const ExchangePtr& x, bool is_patch) {
  auto doc = ctx.body(*x, {"application/json", "application/merge-patch+json"}, true);
  if (!doc) return;
  const std::string id = x->segments[2];
  Identity want;
  if (!is_patch) {
    auto got = identity_of(ctx, x, *doc, id);
    if (!got) return;
    want = std::move(*got);
  }
  auto s = twins::parse_twin_settings(*doc, is_patch, ctx.limits());
  if (!s) return x->status(s.status());
  if (is_patch) return ctx.call(x, twins::PatchTwin{std::move(*s)});
  if (!want.password && !want.certificate && !want.revoke) {
    return ctx.call(x, twins::ProvisionTwin{std::move(*s)});
  }
  // Credentials are issued (or revoked) after the twin is committed, on the blocking pool:
  // hashing, key generation and the broker's file rewrites take milliseconds. What changed is
  // then recorded in the twin's change feed (credentials.changed) before the answer.
  ctx.call(x, twins::ProvisionTwin{std::move(*s)}, Etag::kVersion, nullptr,
           [&ctx, want, id](const ExchangePtr& ex, twins::ApiReply r) {
             if (!r.status) {
               return ex->send(
                   ApiContext::to_response(std::move(r), Etag::kVersion, nullptr, ex->req.path));
             }
             ctx.server->run_blocking([&ctx, ex, want, id, r = std::move(r)]() mutable {
               twins::RecordCredentials record;
               if (want.revoke) {
                 auto revoked = ctx.device_auth->revoke(id);
                 if (!revoked) return ex->status(revoked.status());
                 revocation_changes(*revoked, record.changes);
               }
               if (want.password) {
                 auto password = ctx.device_auth->issue(id);
                 if (!password) return ex->status(password.status());
                 // Shown here, once; kept only as a hash. A PUT with credentials on an existing
                 // twin replaces the password.
                 r.body["credentials"] = {{"username", id}, {"password", *password}};
                 record.changes.push_back({"password", "issued", "", 1});
               }
               if (want.certificate) {
                 auto cert = ctx.device_auth->issue_certificate(id, want.csr);
                 if (!cert) return ex->status(cert.status());
                 // Shown here, once: the private key is not kept (and with a CSR never left the
                 // device). Earlier certificates of the device stay valid until revoked.
                 r.body["certificate"] = {{"certificate_pem", cert->certificate_pem},
                                          {"ca_pem", cert->ca_pem},
                                          {"serial", cert->serial}};
                 if (!cert->private_key_pem.empty()) {
                   r.body["certificate"]["private_key_pem"] = cert->private_key_pem;
                 }
                 record.changes.push_back({"certificate", "issued", cert->serial, 1});
               }
               answer_after_record(ctx, ex, std::move(record), std::move(r));
             });
           });
}

void remove(const ApiContext& ctx, const ExchangePtr& x) {
  if (ctx.device_auth == nullptr) return ctx.call(x, twins::DeleteTwin{});
  // Credentials go first: a deprovisioned device must not keep access, even if the delete itself
  // then fails and is retried. The revocation is in the feed before the twin.deleted event.
  ctx.server->run_blocking([&ctx, x] {
    auto revoked = ctx.device_auth->revoke(x->segments[2]);
    if (!revoked) return x->status(revoked.status());
    twins::RecordCredentials record;
    revocation_changes(*revoked, record.changes);
    if (record.changes.empty()) return ctx.call(x, twins::DeleteTwin{});
    ctx.call(x, std::move(record), Etag::kVersion, nullptr,
             [&ctx](const ExchangePtr& ex, const twins::ApiReply&) {
               // Recorded or not (the twin may not exist), the delete decides the answer.
               ctx.call(ex, twins::DeleteTwin{});
             });
  });
}

void update_desired(const ApiContext& ctx, const ExchangePtr& x, bool replace) {
  std::optional<uint64_t> if_match;
  if (auto h = x->req.header("If-Match")) {
    auto m = twins::parse_if_match(*h);
    if (!m) return x->status(m.status());
    if_match = *m;
  }
  auto doc = replace ? ctx.body(*x, {"application/json"}, false)
                     : ctx.body(*x, {"application/merge-patch+json", "application/json"}, false);
  if (!doc) return;
  ctx.call(x, twins::UpdateDesired{std::move(*doc), replace, if_match}, Etag::kDesiredVersion);
}

// GET /v1/twins/{id}, or as it was: ?as_of_version=N (right after the write that made version
// N) or ?as_of=<epoch ms> (after the last write at or before then), rebuilt from the store's
// snapshots and events (twins::FleetReads).
void get_twin(const ApiContext& ctx, const ExchangePtr& x) {
  const auto by_version = x->req.param("as_of_version");
  const auto by_time = x->req.param("as_of");
  if (!by_version && !by_time) return ctx.call(x, twins::GetTwin{});
  if (by_version && by_time) {
    return x->problem(400, "invalid_argument", "give as_of_version or as_of, not both");
  }
  if (!ctx.reads->records_changes()) {
    return x->problem(400, "invalid_argument",
                      "as-of reads need the change history, and this gateway runs with "
                      "--history false");
  }
  twins::AsOf at;
  if (by_version) {
    auto n = parse_u64(*by_version);
    if (!n) return x->problem(400, "invalid_argument", "as_of_version must be a twin version");
    at.version = *n;
  } else {
    auto n = parse_u64(*by_time);
    if (!n || *n > static_cast<uint64_t>(INT64_MAX)) {
      return x->problem(400, "invalid_argument", "as_of must be a time in Unix milliseconds");
    }
    at.ts = static_cast<twins::Millis>(*n);
  }
  // The twin as it is now says whether the moment asked for can exist: it answers 404 when the
  // twin does not exist, and it is committed before the store is read.
  ctx.call(x, twins::GetTwin{}, Etag::kVersion, nullptr,
           [&ctx, at](const ExchangePtr& ex, twins::ApiReply r) {
             if (!r.status) {
               return ex->send(
                   ApiContext::to_response(std::move(r), Etag::kVersion, nullptr, ex->req.path));
             }
             const auto version = r.body.value("version", uint64_t{0});
             const auto created = r.body.value("created_at", twins::Millis{0});
             ctx.server->run_blocking([&ctx, ex, at, version, created] {
               auto doc = ctx.reads->as_of(ex->segments[2], at, version, created);
               if (!doc) return ex->status(doc.status());
               ex->json_body(200, *doc);
             });
           });
}

}  // namespace

void add_twin_routes(Router& router, const ApiContext* ctx) {
  auto twin = [ctx](TwinHandler f) { return twin_route(ctx, std::move(f)); };
  router.add("GET", "/v1/twins", [ctx](const ExchangePtr& x) { list_twins(*ctx, x); });
  router.add("GET", "/v1/fleet/count", [ctx](const ExchangePtr& x) { count_twins(*ctx, x); });
  router.add("GET", "/v1/twins/{id}", twin(get_twin));
  router.add("GET", "/v1/twins/{id}/explain", twin([](const ApiContext& c, const ExchangePtr& x) {
               c.call(x, twins::ExplainTwin{});
             }));
  router.add("PUT", "/v1/twins/{id}",
             twin([](const ApiContext& c, const ExchangePtr& x) { settings(c, x, false); }));
  router.add("PATCH", "/v1/twins/{id}",
             twin([](const ApiContext& c, const ExchangePtr& x) { settings(c, x, true); }));
  router.add("DELETE", "/v1/twins/{id}", twin(remove));
  router.add("GET", "/v1/twins/{id}/desired", twin([](const ApiContext& c, const ExchangePtr& x) {
               c.call(x, twins::GetTwin{}, Etag::kDesiredVersion, "desired");
             }));
  router.add("PATCH", "/v1/twins/{id}/desired",
             twin([](const ApiContext& c, const ExchangePtr& x) { update_desired(c, x, false); }));
  router.add("PUT", "/v1/twins/{id}/desired",
             twin([](const ApiContext& c, const ExchangePtr& x) { update_desired(c, x, true); }));
}

}  // namespace doppel::gateway
