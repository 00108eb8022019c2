// The change feed against the real daemon, broker and database file: causes (X-Request-Id, the
// token's name), resuming with Last-Event-ID across kill -9 with nothing acknowledged missing and
// nothing recorded that did not happen, retention (410 and overflow), and a consumer that stops
// reading and then catches up, in order, while another keeps receiving.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/raw_http.h"

using namespace doppel::testing;
using Clock = std::chrono::steady_clock;

namespace {

// The events (data: lines, parsed) of an SSE text, and the named events' kinds.
std::vector<json> sse_events(const std::string& text) {
  std::vector<json> out;
  for (size_t at = text.find("\ndata: "); at != std::string::npos;
       at = text.find("\ndata: ", at + 1)) {
    const size_t end = text.find('\n', at + 7);
    if (end == std::string::npos) break;
    out.push_back(json::parse(text.substr(at + 7, end - at - 7), nullptr, false));
  }
  return out;
}

std::string sse_request(const std::string& query, std::optional<uint64_t> last_event_id = {}) {
  std::string r =
      "GET /v1/events" + query + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n";
  if (last_event_id) r += "Last-Event-ID: " + std::to_string(*last_event_id) + "\r\n";
  return r + "\r\n";
}

// Reads an event stream until `done(text)` or `within` passes; `text` starts as `so_far`.
std::string read_until(Raw& c, const std::function<bool(const std::string&)>& done,
                       std::chrono::milliseconds within, std::string so_far = {}) {
  std::string all = std::move(so_far);
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline && !done(all) && !c.closed()) {
    if (c.fill(100ms)) {
      all += c.buffered();
      c.clear();
    }
  }
  return all;
}

// Every event through the JSON pages, after `after`.
std::vector<json> all_events(Doppeld& gw, uint64_t after = 0, const std::string& filter = "") {
  std::vector<json> out;
  while (true) {
    // No after_seq at first: from the oldest retained (an explicit 0 would be a 410 once
    // pruning has started).
    auto page =
        gw.get("/v1/events?limit=1000" +
               (after == 0 ? std::string() : "&after_seq=" + std::to_string(after)) + filter);
    REQUIRE(page.status == 200);
    for (const auto& e : page.body["events"]) out.push_back(e);
    const auto next = page.body["next_after_seq"].get<uint64_t>();
    if (next == after) return out;
    after = next;
  }
}

}  // namespace

TEST_CASE("a change's event names its cause: the request id and the token's name") {
  TempDir dir;
  Broker broker(dir);
  Doppeld gw(dir.file("data"), broker.uri(), {"--api-token", "ops=s3cret-1"});
  gw.start();
  auto r = gw.request("PATCH", "/v1/twins/c-1/desired", R"({"mode":"eco"})",
                      {{"Authorization", "Bearer s3cret-1"},
                       {"X-Request-Id", "r-1"},
                       {"Content-Type", "application/merge-patch+json"}});
  REQUIRE(r.status == 200);
  auto page =
      gw.request("GET", "/v1/events?kind=desired.*", "", {{"Authorization", "Bearer s3cret-1"}});
  REQUIRE(page.status == 200);
  REQUIRE(page.body["events"].size() == 1);
  const json& e = page.body["events"][0];
  CHECK(e["kind"] == "desired.updated");
  CHECK(e["twin"] == "c-1");
  CHECK(e["patch"] == json{{"mode", "eco"}});
  CHECK(e["cause"] == json{{"source", "api"}, {"request_id", "r-1"}, {"principal", "ops"}});
  CHECK(gw.log().find("s3cret-1") == std::string::npos);
  // The history of the twin has it too.
  auto history =
      gw.request("GET", "/v1/twins/c-1/history", "", {{"Authorization", "Bearer s3cret-1"}});
  REQUIRE(history.status == 200);
  CHECK(history.body["events"].size() >= 2);  // created, desired.updated, reconcile.changed
  CHECK(history.body["events"][0]["kind"] == "twin.created");
}

TEST_CASE("after kill -9 the feed resumes: every acknowledged change has its event, in order") {
  Stack stack;
  auto& gw = stack.gateway;
  // Writers PATCH while the daemon is killed; what was acknowledged must be in the feed.
  std::atomic<bool> stop{false};
  std::map<std::string, uint64_t> acked;  // twin -> highest acknowledged desired version
  std::mutex mu;
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      const std::string id = "k-" + std::to_string(w);
      for (int n = 1; !stop.load() && n < 100'000; ++n) {
        auto r = gw.patch_desired(id, {{"n", n}});
        if (r.status != 200) continue;
        std::lock_guard lock(mu);
        acked[id] = std::max(acked[id], r.body["desired_version"].get<uint64_t>());
      }
    });
  }
  REQUIRE(eventually(
      [&] {
        std::lock_guard lock(mu);
        return acked.size() == 4 && acked["k-3"] >= 20;
      },
      30s));
  Raw stream(gw.http_port());
  REQUIRE(stream.send(sse_request("?kind=desired.updated", 0)));
  read_until(
      stream, [](const std::string& t) { return t.find("\nid: 5\n") != std::string::npos; }, 10s);
  gw.kill9();
  stop = true;
  for (auto& t : writers) t.join();
  gw.start();

  const auto events = all_events(gw, 0, "&kind=desired.updated");
  std::map<std::string, uint64_t> seen;  // twin -> desired versions recorded, consecutive
  for (size_t i = 0; i < events.size(); ++i) {
    if (i > 0) CHECK(events[i]["seq"].get<uint64_t>() > events[i - 1]["seq"].get<uint64_t>());
    const std::string twin = events[i]["twin"];
    const auto v = events[i]["desired_version"].get<uint64_t>();
    CHECK(v == seen[twin] + 1);
    seen[twin] = v;
  }
  for (const auto& [twin, version] : acked) {
    CAPTURE(twin);
    CHECK(seen[twin] >= version);  // nothing acknowledged is missing
    // ... and nothing is recorded that the store does not have.
    CHECK(gw.get("/v1/twins/" + twin).body["desired_version"].get<uint64_t>() == seen[twin]);
  }
  // Every event, all kinds: consecutive seqs from 1.
  const auto everything = all_events(gw);
  REQUIRE(!everything.empty());
  for (size_t i = 0; i < everything.size(); ++i) {
    CHECK(everything[i]["seq"].get<uint64_t>() == i + 1);
  }
  // A stream resuming with Last-Event-ID gets what followed, from the next seq on.
  const uint64_t from = everything.size() / 2;
  Raw resumed(gw.http_port());
  REQUIRE(resumed.send(sse_request("", from)));
  const std::string text = read_until(
      resumed,
      [&](const std::string& t) { return sse_events(t).size() >= everything.size() - from; }, 30s);
  const auto got = sse_events(text);
  REQUIRE(got.size() == everything.size() - from);
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i]["seq"].get<uint64_t>() == from + 1 + i);
}

TEST_CASE("retention: pruned positions answer 410, a stream behind them gets overflow") {
  TempDir dir;
  Broker broker(dir);
  {
    Doppeld gw(dir.file("data"), broker.uri());
    gw.start();
    for (int i = 0; i < 5; ++i) REQUIRE(gw.patch_desired("r-1", {{"i", i}}).status == 200);
    CHECK(gw.stop() == 0);
  }
  // Restarted with a retention of a millisecond: the pruner, which runs at start, removes all.
  Doppeld gw(dir.file("data"), broker.uri(), {"--history-retention-s", "0.001"});
  gw.start();
  CHECK(eventually([&] { return gw.get("/v1/events?after_seq=1").status == 410; }, 20s));
  auto gone = gw.get("/v1/events?after_seq=1");
  CHECK(gone.body["type"] == "urn:doppel:problem:gone");
  CHECK(gone.body["detail"].get<std::string>().find("seq") != std::string::npos);
  Raw c(gw.http_port());
  REQUIRE(c.send(sse_request("", 1)));
  const std::string text = read_until(
      c, [](const std::string& t) { return t.find("\r\n0\r\n\r\n") != std::string::npos; }, 10s);
  CHECK(text.find("event: overflow\n") != std::string::npos);
  const auto overflow = sse_events(text);
  REQUIRE(overflow.size() == 1);
  const auto oldest = overflow[0]["oldest_seq"].get<uint64_t>();
  CHECK(oldest > 1);
  // The sequence goes on after pruning: the next change gets a seq never used before.
  REQUIRE(gw.patch_desired("r-1", {{"i", 99}}).status == 200);
  const auto after = all_events(gw);
  REQUIRE(!after.empty());
  CHECK(after.front()["seq"].get<uint64_t>() >= oldest);
  // As-of reads: the version whose events went is gone; the state the pruner kept still answers.
  auto v3 = gw.get("/v1/twins/r-1?as_of_version=3");
  CHECK(v3.status == 410);
  CHECK(v3.body["type"] == "urn:doppel:problem:gone");
  const json now = gw.get("/v1/twins/r-1").body;
  auto latest = gw.get("/v1/twins/r-1?as_of=" + std::to_string(now["updated_at"].get<int64_t>()));
  REQUIRE(latest.status == 200);
  CHECK(latest.body["desired"] == now["desired"]);
}

// Regression: the cap on reported events removed events from the middle of the log and a
// consumer resuming before them was not told; seqs past the newest (or past 2^63, which wrapped
// negative) were accepted silently.
TEST_CASE(
    "the feed tells a consumer of events the reported cap removed, and refuses seqs it never "
    "gave") {
  TempDir dir;
  Broker broker(dir);
  {
    Doppeld gw(dir.file("data"), broker.uri());
    gw.start();
    REQUIRE(gw.patch_desired("g-1", {{"m", 1}}).status == 200);
    TestDevice dev("g-1", broker.uri());
    dev.connect();
    for (int i = 1; i <= 300; ++i) dev.publish("reported", json{{"state", {{"n", i}}}}.dump());
    REQUIRE(eventually([&] { return gw.get("/v1/twins/g-1").body["reported"]["n"] == 300; }, 30s));
    REQUIRE(gw.patch_desired("g-1", {{"m", 2}}).status == 200);
    const auto newest = all_events(gw).back()["seq"].get<uint64_t>();
    // Past the newest, and past what a seq can be.
    auto future = gw.get("/v1/events?after_seq=" + std::to_string(newest + 1));
    CHECK(future.status == 400);
    CHECK(future.body["detail"].get<std::string>().find("past the newest") != std::string::npos);
    CHECK(gw.get("/v1/events?after_seq=9223372036854775808").status == 400);
    CHECK(gw.get("/v1/events?after_seq=9223372036854775807").status == 400);
    Raw c(gw.http_port());
    REQUIRE(
        c.send("GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
               "Last-Event-ID: 9223372036854775808\r\n\r\n"));
    CHECK(status_of(c.response(10s)) == 400);
    CHECK(gw.get("/v1/events?after_seq=" + std::to_string(newest)).status == 200);
    CHECK(gw.stop() == 0);
  }
  // The pruner runs at start: 100 reported events are kept, the 200 oldest go.
  Doppeld gw(dir.file("data"), broker.uri(), {"--history-max-reported-events", "100"});
  gw.start();
  json page;
  REQUIRE(eventually(
      [&] {
        page = gw.get("/v1/events?after_seq=1&limit=1000").body;
        return page.contains("gaps");
      },
      20s));
  REQUIRE(page["gaps"].size() >= 1);
  uint64_t removed = 0;
  for (const auto& g : page["gaps"]) {
    CHECK(g["kind"] == "reported.updated");
    CHECK(g["from_seq"].get<uint64_t>() > 1);
    removed += g["removed"].get<uint64_t>();
  }
  CHECK(removed == 200);
  // The reported events left are the newest 100, after the gap.
  std::vector<json> reported;
  for (const auto& e : page["events"]) {
    if (e["kind"] == "reported.updated") reported.push_back(e);
  }
  REQUIRE(reported.size() == 100);
  CHECK(reported.front()["seq"].get<uint64_t>() > page["gaps"].back()["to_seq"].get<uint64_t>());
  // A reader of desired changes only is not told; an SSE reader gets a gap frame first.
  CHECK_FALSE(gw.get("/v1/events?after_seq=1&kind=desired.updated").body.contains("gaps"));
  Raw c(gw.http_port());
  REQUIRE(c.send(sse_request("", 1)));
  const std::string text = read_until(
      c,
      [](const std::string& t) { return t.find("event: reported.updated\n") != std::string::npos; },
      10s);
  const size_t gap = text.find("event: gap\n");
  CHECK(gap != std::string::npos);
  CHECK(gap < text.find("event: reported.updated\n"));
  CHECK(gw.stop() == 0);
}

TEST_CASE("a consumer that stops reading keeps its place and then gets everything, in order") {
  Stack stack({"--http-stream-buffer-bytes", "65536"});
  auto& gw = stack.gateway;
  const uint64_t start = all_events(gw).size();
  Raw slow(gw.http_port(), nullptr, 16384);  // a small window, and it does not read for now
  REQUIRE(slow.send(sse_request("?kind=desired.updated", start)));
  Raw fast(gw.http_port());
  REQUIRE(fast.send(sse_request("?kind=desired.updated", start)));
  // ~0.5 MB of events: eight times the stream bound, far past the slow reader's window.
  const std::string pad(300, 'p');
  std::string fast_text;
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(gw.patch_desired("s-" + std::to_string(i % 10), {{"i", i}, {"pad", pad}}).status ==
            200);
    if (fast.fill(0ms)) {
      fast_text += fast.buffered();
      fast.clear();
    }
  }
  fast_text = read_until(
      fast, [](const std::string& t) { return sse_events(t).size() >= 1000; }, 60s, fast_text);
  CHECK(sse_events(fast_text).size() == 1000);
  const std::string slow_text = read_until(
      slow, [](const std::string& t) { return sse_events(t).size() >= 1000; }, 60s);
  const auto got = sse_events(slow_text);
  REQUIRE(got.size() == 1000);
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i]["desired_version"].is_number());
  for (size_t i = 1; i < got.size(); ++i) {
    CHECK(got[i]["seq"].get<uint64_t>() > got[i - 1]["seq"].get<uint64_t>());
  }
  CHECK(metric(gw.text("/metrics"), "doppel_http_refused_total{reason=\"stream_too_slow\"}") == 0);
}

TEST_CASE("filtered streams each get their own twins' events, and only those") {
  Stack stack;
  auto& gw = stack.gateway;
  Raw a(gw.http_port());
  Raw b(gw.http_port());
  Raw kinds(gw.http_port());
  REQUIRE(a.send(sse_request("?twin=f-a")));
  REQUIRE(b.send(sse_request("?twin=f-b&twin=f-c")));
  REQUIRE(kinds.send(sse_request("?kind=twin.*")));
  REQUIRE(eventually([&] { return metric(gw.text("/metrics"), "doppel_http_streams") == 3; }, 10s));
  // Interleaved changes: each stream is woken only by what it asked for, and misses none of it.
  for (int i = 0; i < 20; ++i) {
    REQUIRE(gw.patch_desired("f-b", {{"i", i}}).status == 200);
    REQUIRE(gw.patch_desired("f-a", {{"i", i}}).status == 200);
    REQUIRE(gw.patch_desired("f-x", {{"i", i}}).status == 200);
  }
  REQUIRE(gw.patch_desired("f-c", {{"i", 0}}).status == 200);
  auto desired_of = [](const std::string& text, const std::string& twin) {
    size_t n = 0;
    for (const auto& e : sse_events(text)) {
      if (e["twin"] != twin) return std::string::npos;  // another twin's event: wrong
      n += e["kind"] == "desired.updated" ? 1 : 0;
    }
    return n;
  };
  const std::string ta = read_until(
      a, [&](const std::string& t) { return desired_of(t, "f-a") >= 20; }, 20s);
  CHECK(desired_of(ta, "f-a") == 20);
  const std::string tb = read_until(
      b,
      // Until f-c's desired change itself has arrived (its twin.created comes first, and may
      // arrive alone).
      [&](const std::string& t) {
        for (const auto& e : sse_events(t)) {
          if (e["twin"] == "f-c" && e["kind"] == "desired.updated") return true;
        }
        return false;
      },
      20s);
  CHECK(occurrences(tb, "\"twin\":\"f-a\"") == 0);
  CHECK(occurrences(tb, "\"twin\":\"f-x\"") == 0);
  CHECK(occurrences(tb, "\"kind\":\"desired.updated\"") == 21);
  const std::string tk = read_until(
      kinds, [](const std::string& t) { return sse_events(t).size() >= 4; }, 20s);
  const auto created = sse_events(tk);
  REQUIRE(created.size() == 4);  // f-b, f-a, f-x, f-c
  for (const auto& e : created) CHECK(e["kind"] == "twin.created");
}

TEST_CASE("as-of reads over HTTP: by version and by time, 404 before the twin, 400 on bad input") {
  TempDir dir;
  Broker broker(dir);
  Doppeld gw(dir.file("data"), broker.uri());
  gw.start();
  REQUIRE(gw.patch_desired("a-1", {{"mode", "eco"}}).status == 200);
  const json v1 = gw.get("/v1/twins/a-1").body;
  REQUIRE(gw.request("PATCH", "/v1/twins/a-1", R"({"tags":{"site":"berlin"}})",
                     {{"Content-Type", "application/merge-patch+json"}})
              .status == 200);
  REQUIRE(gw.patch_desired("a-1", {{"mode", "boost"}}).status == 200);
  const json v2 = gw.get("/v1/twins/a-1").body;
  REQUIRE(v2["version"] == 2);

  auto at1 = gw.get("/v1/twins/a-1?as_of_version=1");
  REQUIRE(at1.status == 200);
  CHECK(at1.body["version"] == 1);
  CHECK(at1.body["desired"] == v1["desired"]);
  CHECK(at1.body["tags"] == json::object());  // tagged after version 1 was made
  CHECK(at1.body["as_of"]["seq"].get<uint64_t>() > 0);
  auto at2 = gw.get("/v1/twins/a-1?as_of_version=2");
  REQUIRE(at2.status == 200);
  CHECK(at2.body["desired"] == v2["desired"]);
  CHECK(at2.body["tags"] == json{{"site", "berlin"}});
  CHECK(at2.body["reconcile"] == json{{"state", v2["reconcile"]["state"]},
                                      {"attempts", v2["reconcile"]["attempts"]},
                                      {"desired_version", v2["reconcile"]["desired_version"]}});

  // By time: the moment of version 1's event answers version 1.
  const auto history = gw.get("/v1/twins/a-1/history?from_version=1&to_version=1").body;
  REQUIRE(!history["events"].empty());
  const auto t1 = history["events"][0]["ts"].get<int64_t>();
  auto by_time = gw.get("/v1/twins/a-1?as_of=" + std::to_string(t1));
  REQUIRE(by_time.status == 200);
  CHECK(by_time.body["version"] == 1);

  CHECK(gw.get("/v1/twins/a-1?as_of_version=9").status == 404);
  CHECK(gw.get("/v1/twins/a-1?as_of=1000").status == 404);
  CHECK(gw.get("/v1/twins/nope?as_of_version=1").status == 404);
  const auto bad = gw.get("/v1/twins/a-1?as_of_version=x");
  CHECK(bad.status == 400);
  CHECK(bad.body["detail"].get<std::string>().find("as_of_version") != std::string::npos);
  CHECK(gw.get("/v1/twins/a-1?as_of_version=1&as_of=5").status == 400);

  // A new incarnation has its own history; the earlier one is in the feed only.
  REQUIRE(gw.request("DELETE", "/v1/twins/a-1").status == 204);
  REQUIRE(gw.request("PUT", "/v1/twins/a-1", R"({"desired":{"x":1}})",
                     {{"Content-Type", "application/json"}})
              .status == 201);
  auto reborn = gw.get("/v1/twins/a-1?as_of_version=1");
  REQUIRE(reborn.status == 200);
  CHECK(reborn.body["desired"] == json{{"x", 1}});
  CHECK(gw.get("/v1/twins/a-1?as_of=" + std::to_string(t1)).status == 404);
  CHECK(gw.get("/v1/twins/a-1?as_of_version=0").status == 404);
}
