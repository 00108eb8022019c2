// Jobs over HTTP against the real doppeld, broker and simulated devices: a rollout that is
// killed with kill -9 halfway resumes where it was, applies the change to every twin exactly
// once, keeps its rate across the restart, and completes as the devices converge; the API's
// answers (201, 409, 400 with the query's column, 404, listing, paging, cancel).
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <map>

#include "tests/support/harness.h"
#include "twins/query.h"

using namespace doppel::testing;

namespace {

constexpr int kDevices = 40;
constexpr double kRate = 8;

// Every event of `kind` in the feed, oldest first.
std::vector<json> feed(Doppeld& gw, const std::string& kind) {
  std::vector<json> out;
  uint64_t after = 0;
  while (true) {
    auto r = gw.get("/v1/events?limit=1000&kind=" + kind + "&after_seq=" + std::to_string(after));
    REQUIRE(r.status == 200);
    for (auto& e : r.body["events"]) out.push_back(e);
    const uint64_t next = r.body["next_after_seq"].get<uint64_t>();
    if (next == after || r.body["events"].empty()) break;
    after = next;
  }
  return out;
}

}  // namespace

TEST_CASE("a rollout survives kill -9: resumed, each twin changed once, rate held, completed") {
  Stack stack({"--reconcile-timeout-s", "1"});
  auto& [dir, broker, gw] = stack;
  Process sim =
      start_sim(broker.uri(), dir.file("sim.log"),
                {"--devices", std::to_string(kDevices), "--interval-s", "2", "--delta-delay-s",
                 "0.02", "--progress-s", "0", "--connect-rate", "200"});
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        auto twins = gw.list_all();
                        return twins.size() == kDevices &&
                               std::all_of(twins.begin(), twins.end(), [](const json& t) {
                                 return t["connection"]["state"] == "online";
                               });
                      },
                      30s),
                  "the simulated devices did not all come online; sim log:\n", sim.log());

  const json body = {{"id", "eco-1"},
                     {"target", {{"query", "id LIKE 'sim-%'"}}},
                     {"action", {{"desired", {{"mode", "eco"}}}}},
                     {"rate_per_s", kRate}};
  auto created = gw.request("POST", "/v1/jobs", body.dump());
  REQUIRE_MESSAGE(created.status == 201, created.body.dump());
  CHECK(created.body["total"] == kDevices);
  CHECK(created.body["status"] == "running");
  CHECK(gw.request("POST", "/v1/jobs", body.dump()).status == 409);

  // Halfway: some converged, some not yet dispatched.
  REQUIRE(eventually(
      [&] {
        const json c = gw.get("/v1/jobs/eco-1").body["counts"];
        return c["succeeded"].get<int>() >= 10;
      },
      30s));
  const json before = gw.get("/v1/jobs/eco-1").body;
  REQUIRE(before["counts"]["pending"].get<int>() > 0);
  gw.kill9();
  gw.start();

  json job;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        job = gw.get("/v1/jobs/eco-1").body;
                        return job["status"] == "completed";
                      },
                      60s, 200ms),
                  "the job did not complete: ", job.dump());
  CHECK(job["counts"]["succeeded"] == kDevices);
  CHECK(job["total"] == kDevices);
  for (const json& t : gw.list_all()) {
    CHECK(t["desired"]["mode"] == "eco");
    CHECK(t["reported"]["mode"] == "eco");
    CHECK(t["desired_version"] == 1);  // the patch applied once
  }

  // The change feed: exactly one desired.updated per twin, caused by the job, and never more
  // than the rate (plus its burst of one) in any second — across the restart too.
  std::map<std::string, int> per_twin;
  std::vector<int64_t> ts;
  for (const json& e : feed(gw, "desired.updated")) {
    CHECK(e["cause"]["source"] == "job");
    CHECK(e["cause"]["job"] == "eco-1");
    ++per_twin[e["twin"].get<std::string>()];
    ts.push_back(e["ts"].get<int64_t>());
  }
  CHECK(per_twin.size() == kDevices);
  for (const auto& [twin, n] : per_twin) CHECK_MESSAGE(n == 1, twin);
  std::sort(ts.begin(), ts.end());
  size_t most = 0;
  for (size_t i = 0, j = 0; i < ts.size(); ++i) {
    while (ts[i] - ts[j] >= 1000) ++j;
    most = std::max(most, i - j + 1);
  }
  // Bucket refill plus scheduling jitter of a few ms at either end of the window.
  CHECK(most <= static_cast<size_t>(kRate) + 2);
  const double span_s = static_cast<double>(ts.back() - ts.front()) / 1000.0;
  CHECK(span_s >= (kDevices - 2) / kRate - 0.5);

  const auto jobs_events = feed(gw, "job.changed");
  REQUIRE(jobs_events.size() == 2);
  CHECK(jobs_events[0]["status"] == "running");
  CHECK(jobs_events[1]["status"] == "completed");
  CHECK_FALSE(jobs_events[1].contains("twin"));

  // Listing and paging.
  auto listed = gw.get("/v1/jobs?status=completed");
  REQUIRE(listed.status == 200);
  REQUIRE(listed.body["items"].size() == 1);
  CHECK(listed.body["items"][0]["id"] == "eco-1");
  CHECK(gw.get("/v1/jobs?status=running").body["items"].empty());
  std::vector<std::string> twins;
  std::string cursor;
  do {
    auto page = gw.get("/v1/jobs/eco-1/twins?status=succeeded&limit=7" +
                       (cursor.empty() ? std::string() : "&cursor=" + cursor));
    REQUIRE(page.status == 200);
    for (auto& e : page.body["items"]) {
      CHECK(e["status"] == "succeeded");
      CHECK(e["attempts"] == 1);
      twins.push_back(e["twin"]);
    }
    cursor = page.body["next_cursor"].is_null() ? "" : page.body["next_cursor"].get<std::string>();
  } while (!cursor.empty());
  CHECK(twins.size() == kDevices);
  CHECK(std::is_sorted(twins.begin(), twins.end()));
  CHECK(std::adjacent_find(twins.begin(), twins.end()) == twins.end());
  CHECK(gw.request("POST", "/v1/jobs/eco-1/cancel").status == 409);

  sim.signal(SIGINT);
  CHECK(sim.wait_exit(15s));
  CHECK(gw.stop() == 0);
}

TEST_CASE("the jobs API refuses bad requests with problem+json and changes nothing") {
  Stack stack;
  auto& gw = stack.gateway;
  REQUIRE(gw.request("PUT", "/v1/twins/a-1", "{}").status == 201);

  auto bad_query =
      gw.request("POST", "/v1/jobs",
                 R"({"target": {"query": "tags.site = "}, "action": {"desired": {"m": 1}}})");
  CHECK(bad_query.status == 400);
  CHECK(bad_query.body["type"] == "urn:doppel:problem:invalid_query");
  CHECK(bad_query.body["detail"].get<std::string>().find("column 13") != std::string::npos);

  auto bad_rate = gw.request(
      "POST", "/v1/jobs",
      R"({"target": {"twins": ["a-1"]}, "action": {"desired": {"m": 1}}, "rate_per_s": -1})");
  CHECK(bad_rate.status == 400);
  CHECK(bad_rate.body["detail"].get<std::string>().find("rate_per_s") == 0);
  CHECK(gw.request("POST", "/v1/jobs", "not json").status == 400);
  // A desired patch that alone is over the document limit would fail on every twin: 413 now.
  const std::string big(17'000, 'x');
  auto too_big = gw.request(
      "POST", "/v1/jobs",
      json{{"target", {{"twins", {"a-1"}}}}, {"action", {{"desired", {{"blob", big}}}}}}.dump());
  CHECK(too_big.status == 413);
  CHECK(too_big.body["detail"].get<std::string>().find("--max-document-bytes") !=
        std::string::npos);
  CHECK(gw.get("/v1/jobs").body["items"].empty());  // nothing was created
  // ... but nulls set nothing: a patch that removes many fields is as long, and fine.
  json removals = json::object();
  for (int i = 0; i < 1500; ++i) removals["field-number-" + std::to_string(i)] = nullptr;
  auto removing = gw.request("POST", "/v1/jobs",
                             json{{"id", "removals"},
                                  {"target", {{"twins", {"a-1"}}}},
                                  {"action", {{"desired", removals}}},
                                  {"rate_per_s", 0.001}}
                                 .dump());
  CHECK(removing.status == 201);
  REQUIRE(gw.request("POST", "/v1/jobs/removals/cancel").status == 200);
  // The documented 10,000 listed twins fit in a body (the longest ids, 128 bytes each).
  json many = json::array();
  for (int i = 0; i < 10'000; ++i) {
    std::string id = std::to_string(i) + "-";
    many.push_back(id + std::string(128 - id.size(), 'n'));
  }
  auto listed = gw.request("POST", "/v1/jobs",
                           json{{"id", "many"},
                                {"target", {{"twins", many}}},
                                {"action", {{"desired", {{"m", 1}}}}},
                                {"rate_per_s", 0.001}}
                               .dump());
  CHECK(listed.status == 201);
  CHECK(listed.body["total"] == 10'000);
  many.push_back("one-too-many");
  auto over =
      gw.request("POST", "/v1/jobs",
                 json{{"target", {{"twins", many}}}, {"action", {{"desired", {{"m", 1}}}}}}.dump());
  CHECK(over.status == 400);
  REQUIRE(gw.request("POST", "/v1/jobs/many/cancel").status == 200);
  CHECK(gw.get("/v1/jobs/nope").status == 404);
  CHECK(gw.get("/v1/jobs/bad%20id").status == 400);
  CHECK(gw.get("/v1/jobs?status=sleeping").status == 400);
  CHECK(gw.get("/v1/jobs?status=running").body["items"].empty());
  CHECK(gw.get("/v1/jobs/nope/twins").status == 404);
  CHECK(gw.request("POST", "/v1/jobs/nope/cancel").status == 404);

  // A generated id; a slow job cancelled at once keeps the twin unchanged.
  auto made = gw.request("POST", "/v1/jobs",
                         R"({"target": {"twins": ["a-1"]}, "action": {"command": {"name": "x"}},
                             "rate_per_s": 0.001})");
  REQUIRE(made.status == 201);
  const std::string id = made.body["id"];
  CHECK_FALSE(id.empty());
  auto cancelled = gw.request("POST", "/v1/jobs/" + id + "/cancel");
  REQUIRE(cancelled.status == 200);
  CHECK(cancelled.body["status"] == "cancelled");
  CHECK(cancelled.body["counts"]["cancelled"] == 1);
  CHECK(gw.get("/v1/twins/a-1/commands").body["items"].empty());
  CHECK(gw.stop() == 0);
}

// Regression (data loss): job target queries that SQLite could not prepare failed the group
// commit they ran in, and device reports the broker had acknowledged were never committed.
TEST_CASE("job target queries never cost a device report or another request's change") {
  Stack stack;
  auto& gw = stack.gateway;
  REQUIRE(gw.request("PUT", "/v1/twins/op-1", "{}").status == 201);
  TestDevice dev("dev-1", stack.broker.uri());
  dev.connect();
  std::string nots;
  for (int i = 0; i < 43; ++i) nots += "NOT ";
  std::string nested_or = "reported.n = 0";
  // Nested as deep as the parser allows (29 levels failed before; now refused by the limit).
  for (int i = 0; i < doppel::twins::kMaxQueryDepth; ++i) {
    nested_or = "(reported.n = " + std::to_string(i) + " OR " + nested_or + ")";
  }
  std::string in_list = "reported.n IN (0";
  for (int i = 1; in_list.size() + 8 < 4096; ++i) in_list += "," + std::to_string(i);
  in_list += ")";
  std::string or_chain = "reported.n = 0";
  for (int i = 1; or_chain.size() + 20 < 4096; ++i)
    or_chain += " OR reported.n = " + std::to_string(i);
  auto job = [](const std::string& q) {
    return json{
        {"target", {{"query", q}}}, {"action", {{"desired", {{"m", 1}}}}}, {"rate_per_s", 0.001}}
        .dump();
  };
  constexpr int kReports = 150;
  for (int i = 1; i <= kReports; ++i) {
    dev.publish("reported", json{{"state", {{"n", i}}}}.dump());
    if (i % 15 == 0) {
      // Too deep for SQL: refused at parse time, naming the limit.
      auto deep = gw.request("POST", "/v1/jobs", job(nots + "reported.n = 1"));
      CHECK(deep.status == 400);
      CHECK(deep.body["type"] == "urn:doppel:problem:invalid_query");
      CHECK(deep.body["detail"].get<std::string>().find("(the limit)") != std::string::npos);
      CHECK(gw.request("POST", "/v1/jobs", job(nested_or)).status == 201);
      // As many terms as 4 KiB holds: accepted, and they run.
      CHECK(gw.request("POST", "/v1/jobs", job(in_list)).status == 201);
      CHECK(gw.request("POST", "/v1/jobs", job(or_chain)).status == 201);
      CHECK(gw.get("/v1/fleet/count?q=" + std::string("reported.n%20%3E%200")).status == 200);
      CHECK(gw.patch_desired("op-1", {{"v", i}}).status == 200);
    }
  }
  // Every report the broker took is committed: the twin saw all of them, in order.
  CHECK(eventually(
      [&] {
        auto t = gw.get("/v1/twins/dev-1");
        return t.status == 200 && t.body["reported"]["n"] == kReports &&
               t.body["reported_version"] == kReports;
      },
      20s));
  CHECK(gw.get("/v1/twins/op-1").body["desired_version"] == kReports / 15);
  CHECK(gw.stop() == 0);
}
