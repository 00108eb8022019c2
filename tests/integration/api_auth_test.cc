// Bearer tokens: 401 without or with a wrong token, 403 for a read-only token that writes,
// health endpoints stay open, tokens never reach the log, and a non-loopback bind without
// tokens is refused. Every answer, refusals too, echoes X-Request-Id (the client's, or a new one).
#include <doctest/doctest.h>

#include <fstream>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("the API needs a bearer token when tokens are configured") {
  TempDir dir;
  Broker broker(dir);
  const std::string full = "full-token-5f1c2a";
  const std::string read = "read-token-9d03b7";
  // Tokens in a config file keep them out of the process list.
  {
    std::ofstream conf(dir.file("doppeld.toml"));
    conf << "api-token = [\"" << full << "\"]\napi-read-token = [\"" << read << "\"]\n";
  }
  Doppeld gw(dir.file("data"), broker.uri(), {"--config", dir.file("doppeld.toml")});
  gw.start();

  CHECK(gw.get("/healthz").status == 200);
  CHECK(gw.get("/readyz").status == 200);
  // The API description holds no data: readable without a token, like the probes.
  auto spec = gw.get("/v1/openapi.json");
  CHECK(spec.status == 200);
  CHECK(spec.body["openapi"] == "3.1.0");

  auto none = gw.get("/v1/twins");
  CHECK(none.status == 401);
  CHECK(none.content_type == "application/problem+json");
  CHECK(none.body["type"] == "urn:doppel:problem:unauthorized");
  auto wrong = gw.request("GET", "/v1/twins", "", {{"Authorization", "Bearer not-it"}});
  CHECK(wrong.status == 401);
  CHECK(gw.request("GET", "/metrics", "", {}).status == 401);

  const auto auth_read = std::make_pair(std::string("Authorization"), "Bearer " + read);
  const auto auth_full = std::make_pair(std::string("Authorization"), "Bearer " + full);
  CHECK(gw.request("GET", "/v1/twins", "", {auth_read}).status == 200);
  auto forbidden = gw.request("PATCH", "/v1/twins/t/desired", R"({"a":1})", {auth_read});
  CHECK(forbidden.status == 403);
  CHECK(forbidden.body["type"] == "urn:doppel:problem:forbidden");
  CHECK(gw.request("GET", "/v1/twins/t", "", {auth_full}).status == 404);  // nothing was created
  CHECK(gw.request("PATCH", "/v1/twins/t/desired", R"({"a":1})", {auth_full}).status == 200);
  CHECK(gw.request("GET", "/v1/twins/t", "", {auth_read}).body["desired"]["a"] == 1);

  CHECK(gw.log().find(full) == std::string::npos);
  CHECK(gw.log().find(read) == std::string::npos);
}

TEST_CASE("a non-loopback HTTP bind without tokens is refused") {
  TempDir dir;
  Broker broker(dir);
  Process p({DOPPELD_PATH, "--data", dir.file("data"), "--broker", broker.uri(), "--http",
             "0.0.0.0:" + std::to_string(free_port())},
            dir.file("d.log"));
  int status = 0;
  REQUIRE(p.wait_exit(10s, &status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(p.log().find("--api-token") != std::string::npos);
}

TEST_CASE("every answer carries X-Request-Id: the client's own, or a new one") {
  TempDir dir;
  Broker broker(dir);
  Doppeld gw(dir.file("data"), broker.uri(), {"--api-token", "tok-1"});
  gw.start();
  const std::vector<std::pair<std::string, std::string>> auth = {{"Authorization", "Bearer tok-1"}};
  auto given = gw.request("PATCH", "/v1/twins/r-1/desired", R"({"a":1})",
                          {{"Authorization", "Bearer tok-1"}, {"X-Request-Id", "r-1"}});
  CHECK(given.status == 200);
  CHECK(given.request_id == "r-1");
  // Refusals too (401 without a token, 404, 400).
  auto refused = gw.request("GET", "/v1/twins/r-1", "", {{"X-Request-Id", "r-2"}});
  CHECK(refused.status == 401);
  CHECK(refused.request_id == "r-2");
  auto a = gw.request("GET", "/v1/twins/nobody", "", auth);
  auto b = gw.request("GET", "/v1/twins/bad%2Fid", "", auth);
  CHECK(a.status == 404);
  CHECK(b.status == 400);
  CHECK(!a.request_id.empty());
  CHECK(!b.request_id.empty());
  CHECK(a.request_id != b.request_id);
  // An unusable one (too long, or with spaces) is replaced, not echoed.
  auto long_id = gw.request("GET", "/healthz", "", {{"X-Request-Id", std::string(200, 'x')}});
  CHECK(!long_id.request_id.empty());
  CHECK(long_id.request_id.size() <= 128);
  auto spaced = gw.request("GET", "/healthz", "", {{"X-Request-Id", "a b"}});
  CHECK(spaced.request_id != "a b");
}
