// Fleet queries over HTTP against the real daemon and database: a query answered after a
// change's 2xx sees it (devices through the broker too), projection, paging in any order with
// next_cursor, counts by field, 400 invalid_query naming the column, and --index.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <map>
#include <set>

#include "simulator/url.h"
#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

std::set<std::string> ids_of(const json& page) {
  std::set<std::string> out;
  for (const auto& t : page["items"]) out.insert(t["id"].get<std::string>());
  return out;
}

}  // namespace

TEST_CASE("queries see every change answered before them, devices' included") {
  Stack stack({"--index", "reported.fw", "--index", "tags.site"});
  auto& gw = stack.gateway;
  TestDevice dev("q-dev", stack.broker.uri());
  dev.connect();
  dev.publish("reported", R"({"state":{"fw":"1.4","mode":"eco"}})");
  REQUIRE(eventually([&] { return gw.get("/v1/twins/q-dev").status == 200; }, 10s));
  for (const char* id : {"q-1", "q-2", "q-3"}) {
    REQUIRE(gw.request("PUT", std::string("/v1/twins/") + id,
                       R"({"tags":{"site":"berlin"},"desired":{"mode":"eco"}})",
                       {{"Content-Type", "application/json"}})
                .status == 201);
  }
  // Read your writes: the answer to the PATCH came after its commit.
  REQUIRE(gw.patch_desired("q-2", {{"mode", "boost"}}).status == 200);
  auto q = gw.get("/v1/twins?q=" +
                  doppel::sim::percent_encode("desired.mode = 'boost' AND tags.site = 'berlin'"));
  REQUIRE(q.status == 200);
  CHECK(ids_of(q.body) == std::set<std::string>{"q-2"});
  CHECK(q.body["items"][0]["desired"] == json{{"mode", "boost"}});

  auto fw = gw.get("/v1/twins?q=" + doppel::sim::percent_encode("reported.fw LIKE '1.%'") +
                   "&fields=reported.fw,connection.state");
  REQUIRE(fw.status == 200);
  REQUIRE(fw.body["items"].size() == 1);
  CHECK(fw.body["items"][0] == json{{"id", "q-dev"},
                                    {"reported", {{"fw", "1.4"}}},
                                    {"connection", {{"state", "online"}}}});

  auto mismatch =
      gw.get("/v1/twins?q=" + doppel::sim::percent_encode("desired.mode != reported.mode"));
  REQUIRE(mismatch.status == 200);
  CHECK(ids_of(mismatch.body).empty());  // q-1..3 report nothing; q-dev's desired is empty

  auto count = gw.get("/v1/fleet/count?group_by=connection.state");
  REQUIRE(count.status == 200);
  CHECK(count.body["count"] == 4);
  std::map<std::string, int> by_state;
  for (const auto& g : count.body["groups"]) by_state[g["value"]] = g["count"];
  CHECK(by_state == std::map<std::string, int>{{"online", 1}, {"unknown", 3}});
  CHECK(gw.get("/v1/fleet/count?q=" + doppel::sim::percent_encode("tags.site = 'berlin'")).body ==
        json{{"count", 3}});
}

TEST_CASE("paging in any order, and errors that say where") {
  Stack stack;
  auto& gw = stack.gateway;
  for (int i = 0; i < 25; ++i) {
    REQUIRE(gw.patch_desired("p-" + std::to_string(i), {{"n", i % 7}}).status == 200);
  }
  std::vector<std::string> seen;
  std::string cursor;
  for (int pages = 0; pages < 30; ++pages) {
    auto page = gw.get("/v1/twins?order_by=" + doppel::sim::percent_encode("desired.n desc") +
                       "&limit=4" + (cursor.empty() ? "" : "&cursor=" + cursor));
    REQUIRE(page.status == 200);
    for (const auto& t : page.body["items"]) seen.push_back(t["id"]);
    if (page.body["next_cursor"].is_null()) break;
    cursor = page.body["next_cursor"].get<std::string>();
  }
  REQUIRE(seen.size() == 25);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 25);
  auto first = gw.get("/v1/twins/" + seen.front()).body;
  auto last = gw.get("/v1/twins/" + seen.back()).body;
  CHECK(first["desired"]["n"] == 6);
  CHECK(last["desired"]["n"] == 0);

  auto bad = gw.get("/v1/twins?q=" + doppel::sim::percent_encode("desired.n = "));
  CHECK(bad.status == 400);
  CHECK(bad.body["type"] == "urn:doppel:problem:invalid_query");
  CHECK(bad.body["detail"].get<std::string>().find("column 13") != std::string::npos);
  auto unknown = gw.get("/v1/fleet/count?group_by=colour");
  CHECK(unknown.status == 400);
  CHECK(unknown.body["type"] == "urn:doppel:problem:invalid_query");
  CHECK(gw.get("/v1/twins?q=" + std::string(5000, 'a')).status == 400);
  CHECK(gw.get("/v1/twins?order_by=desired.n&cursor=zz").status == 400);
  // Nothing changed: every twin is still there.
  CHECK(gw.get("/v1/fleet/count").body["count"] == 25);
}

TEST_CASE("--index refuses a field the query language does not have") {
  TempDir dir;
  Broker broker(dir);
  Process bad({DOPPELD_PATH, "--data", dir.file("data"), "--broker", broker.uri(), "--http",
               "127.0.0.1:" + std::to_string(free_port()), "--index", "colour"},
              dir.file("bad.log"));
  int status = 0;
  REQUIRE(bad.wait_exit(10s, &status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(bad.log().find("--index") != std::string::npos);
  CHECK(bad.log().find("unknown field 'colour'") != std::string::npos);
}
