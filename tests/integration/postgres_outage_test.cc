// doppeld on PostgreSQL (--store) when the database misbehaves: a missing database or a wrong
// password stops it at start with a message that says what to fix; the server stopped for 5 s
// under 16 API writers: PATCHes answer 503 problem+json meanwhile and /readyz says the store is
// unavailable, doppeld recovers by itself once the server is back, and every acknowledged change
// is there afterwards. (The other integration tests run on PostgreSQL too: *_on_postgres.)
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/postgres_server.h"

using namespace doppel::testing;

TEST_CASE("a missing database or a wrong password stops doppeld at start, saying what to fix") {
  PostgresServer server("s3cret");
  TempDir dir("doppel-pg-it-");
  TempDir broker_dir("doppel-pg-broker-");
  Broker broker(broker_dir);
  {
    Doppeld gw(dir.file("missing"), broker.uri(), {"--store", server.uri("nosuchdb")});
    gw.start_expecting_exit();
    CHECK_FALSE(gw.running());
    CHECK(gw.log().find("create it (createdb)") != std::string::npos);
  }
  {
    Doppeld gw(dir.file("password"), broker.uri(),
               {"--store", server.uri("postgres", "doppel", "guess")});
    gw.start_expecting_exit();
    CHECK_FALSE(gw.running());
    CHECK(gw.log().find("check the user and password") != std::string::npos);
  }
}

TEST_CASE("PostgreSQL stopped for 5 s under 16 API writers: 503s, then recovery, nothing lost") {
  PostgresServer server;
  TempDir dir("doppel-pg-it-");
  TempDir broker_dir("doppel-pg-broker-");
  Broker broker(broker_dir);
  Doppeld gw(dir.file("data"), broker.uri(), {"--store", server.create_database()});
  gw.start();
  constexpr int kTwins = 32;
  for (int i = 0; i < kTwins; ++i) {
    REQUIRE(gw.request("PUT", "/v1/twins/o-" + std::to_string(i), "{}").status / 100 == 2);
  }

  std::mutex mu;
  std::set<std::string> acked;  // "twin/writer/counter" of every PATCH answered 200
  std::atomic<int> unavailable{0};
  std::atomic<int> other{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 16; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 1; !stop.load(); ++n) {
        const std::string id = "o-" + std::to_string((w + n * 16) % kTwins);
        auto r = gw.patch_desired(id, {{"counter", n}, {"writer", w}});
        std::lock_guard lock(mu);
        if (r.status == 200) {
          acked.insert(id + "/" + std::to_string(w) + "/" + std::to_string(n));
        } else if (r.status == 503) {
          unavailable.fetch_add(1);
          CHECK(r.content_type == "application/problem+json");
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        } else {
          other.fetch_add(1);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  server.stop();
  std::this_thread::sleep_for(std::chrono::seconds(5));
  CHECK(gw.get("/readyz").status == 503);
  server.start();
  // Recovery without a restart (bounded: the reconnect backoff is 5 s at most).
  CHECK(eventually([&] { return gw.get("/readyz").status == 200; }, 60s, 100ms));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop.store(true);
  for (auto& t : writers) t.join();
  CHECK(gw.running());
  CHECK(unavailable.load() > 0);
  CHECK(other.load() == 0);

  // Every acknowledged change is in the twin's change feed, exactly once.
  std::map<std::string, int> seen;  // twin/writer/n -> times
  for (int i = 0; i < kTwins; ++i) {
    const std::string id = "o-" + std::to_string(i);
    for (uint64_t after = 0;;) {
      auto events = gw.get("/v1/events?twin=" + id +
                           "&kind=desired.updated&limit=1000&after_seq=" + std::to_string(after));
      REQUIRE(events.status == 200);
      if (events.body["events"].empty()) break;
      for (const auto& e : events.body["events"]) {
        after = e["seq"].get<uint64_t>();
        const auto& patch = e["patch"];
        if (!patch.contains("counter")) continue;
        ++seen[id + "/" + std::to_string(patch["writer"].get<int>()) + "/" +
               std::to_string(patch["counter"].get<int>())];
      }
    }
  }
  int missing = 0;
  for (const auto& key : acked) {
    if (seen[key] != 1) ++missing;
  }
  CHECK(missing == 0);
  for (const auto& [key, times] : seen) CHECK_MESSAGE(times == 1, key);
  MESSAGE(acked.size(), " PATCHes acknowledged; ", unavailable.load(), " answered 503");
}

TEST_CASE(
    "a second doppeld on the same database fences the first: it answers 503, writes nothing") {
  PostgresServer server;
  TempDir dir("doppel-pg-it-");
  TempDir broker_dir("doppel-pg-broker-");
  Broker broker(broker_dir);
  const std::string db = server.create_database();
  Doppeld first(dir.file("first"), broker.uri(), {"--store", db});
  first.start();
  REQUIRE(first.request("PUT", "/v1/twins/f-1", "{}").status / 100 == 2);
  REQUIRE(first.patch_desired("f-1", {{"x", 1}}).status == 200);

  TempDir other_broker_dir("doppel-pg-broker-");
  Broker other_broker(other_broker_dir);  // its own: one client id per broker
  Doppeld second(dir.file("second"), other_broker.uri(), {"--store", db});
  second.start();  // claims every partition

  auto fenced = first.patch_desired("f-1", {{"x", 2}});
  CHECK(fenced.status == 503);
  CHECK(fenced.content_type == "application/problem+json");
  CHECK(fenced.body["type"] == "urn:doppel:problem:fenced");
  auto ready = first.get("/readyz");
  CHECK(ready.status == 503);
  CHECK(ready.body["detail"].get<std::string>().find("another doppeld") != std::string::npos);
  CHECK(first.running());
  CHECK(eventually([&] { return first.log().find("another doppeld") != std::string::npos; }, 10s,
                   50ms));

  // The second serves the twin as the first last committed it, and takes writes.
  auto twin = second.get("/v1/twins/f-1");
  REQUIRE(twin.status == 200);
  CHECK(twin.body["desired"]["x"] == 1);
  CHECK(second.patch_desired("f-1", {{"x", 3}}).status == 200);
  CHECK(second.get("/readyz").status == 200);
}
