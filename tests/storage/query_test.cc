// Fleet queries against the real store, on state the runtime made: typed comparisons (numbers,
// strings, booleans; missing or mistyped is false; NOT inverts), field-to-field comparisons,
// every fixed field, read-your-writes, counts with group_by, keyset paging over data that
// changes between pages, and that indexed equalities read their index (EXPLAIN QUERY PLAN). On
// SQLite, and (built again with DOPPEL_TEST_POSTGRES) on PostgreSQL: both against the reference
// evaluator.
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "tests/support/query_prepares.h"
#include "tests/support/sqlite_rig.h"
#ifdef DOPPEL_TEST_POSTGRES
#include "tests/support/postgres_rig.h"
#endif
#include "tests/support/temp_dir.h"
#include "twins/query_eval.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::SqliteRig;
using doppel::testing::TempDir;

namespace {

// The store under test.
struct OnSqlite {
  explicit OnSqlite(std::vector<std::string> indexes = {})
      : rig(dir.file("doppel.db"), std::move(indexes)) {}
  TempDir dir{"doppel-query-"};
  SqliteRig rig;
};
#ifdef DOPPEL_TEST_POSTGRES
struct OnPostgres {
  explicit OnPostgres(std::vector<std::string> indexes = {}) : rig(std::move(indexes)) {}
  testing::PostgresRuntimeRig rig;
};
using On = OnPostgres;
#else
using On = OnSqlite;
#endif
using Rig = decltype(On::rig);

// Every id matching `q` (all pages), in order.
std::vector<std::string> ids(Rig& rig, const std::string& q, const std::string& order = "",
                             size_t page = 1000) {
  auto where = parse_query(q);
  REQUIRE_MESSAGE(where, where.status().to_string());
  auto o = parse_query_order(order);
  REQUIRE(o);
  TwinQuery query;
  query.where = where->get();
  query.order = *o;
  query.limit = page;
  std::vector<std::string> out;
  while (true) {
    auto r = rig.store->query(query);
    REQUIRE_MESSAGE(r, r.status().to_string() << " (query: " << q << ")");
    for (const auto& t : r->first) out.push_back(t.twin.id);
    if (!r->second) break;
    query.after = r->second;
  }
  return out;
}

// Every stored twin with its query columns, as the runtime made them.
std::vector<TwinRecord> records(Rig& rig) {
  auto stored = rig.store->list("", 100'000);
  REQUIRE_MESSAGE(stored, stored.status().to_string());
  std::vector<TwinRecord> out;
  for (const StoredTwin& st : *stored) {
    auto twin = from_record(st);
    REQUIRE_MESSAGE(twin, twin.status().to_string());
    out.push_back(to_record(*twin, st.twin.next_deadline));
  }
  return out;
}

// What the reference evaluator (twins/query_eval.h) says matches `q`.
std::set<std::string> oracle(const std::vector<TwinRecord>& fleet, const std::string& q) {
  auto where = parse_query(q);
  REQUIRE_MESSAGE(where, where.status().to_string());
  std::set<std::string> out;
  for (const TwinRecord& r : fleet) {
    if (matches(**where, r)) out.insert(r.id);
  }
  return out;
}

// The twins the store finds for `q`, checked against the reference evaluator's answer.
std::set<std::string> matching(Rig& rig, const std::string& q) {
  const auto v = ids(rig, q);
  std::set<std::string> found(v.begin(), v.end());
  CHECK_MESSAGE(found == oracle(records(rig), q), "the store and the evaluator differ on: " << q);
  return found;
}

// A device report, committed when this returns (a device gets no answer to wait for).
void report(Rig& rig, const std::string& id, const json& state) {
  rig.device(id, InboundKind::kReported, json{{"state", state}}.dump());
  rig.store->flush();
}

}  // namespace

TEST_CASE("comparisons are typed: numbers with numbers, strings with strings, booleans alone") {
  On on;
  Rig& rig = on.rig;
  report(rig, "n1", {{"x", 1}});
  report(rig, "n15", {{"x", 1.5}});
  report(rig, "s1", {{"x", "1"}});
  report(rig, "b1", {{"x", true}});
  report(rig, "b0", {{"x", false}});
  report(rig, "o", {{"x", {{"y", 1}}}});
  report(rig, "none", {{"z", 1}});
  using S = std::set<std::string>;
  CHECK(matching(rig, "reported.x = 1") == S{"n1"});
  CHECK(matching(rig, "reported.x >= 1") == S{"n1", "n15"});
  CHECK(matching(rig, "reported.x < 1.5") == S{"n1"});
  CHECK(matching(rig, "reported.x = '1'") == S{"s1"});
  CHECK(matching(rig, "reported.x > '0'") == S{"s1"});
  CHECK(matching(rig, "reported.x = true") == S{"b1"});
  CHECK(matching(rig, "reported.x != true") == S{"b0"});
  CHECK(matching(rig, "reported.x.y = 1") == S{"o"});
  // Missing or of another type: false; NOT inverts that.
  CHECK(matching(rig, "reported.x != 1") == S{"n15"});
  CHECK(matching(rig, "NOT reported.x = 1") == S{"n15", "s1", "b1", "b0", "o", "none"});
  CHECK(matching(rig, "EXISTS(reported.x)") == S{"n1", "n15", "s1", "b1", "b0", "o"});
  CHECK(matching(rig, "NOT EXISTS(reported.x)") == S{"none"});
  CHECK(matching(rig, "reported.x IN (1, '1', true)") == S{"n1", "s1", "b1"});
  CHECK(matching(rig, "reported.x NOT IN (1, '1', true)") == S{"n15", "b0", "o", "none"});
  // Two literals are decided without a twin: every twin or none.
  CHECK(matching(rig, "1 = 1").size() == 7);
  CHECK(matching(rig, "1 = '1'").empty());
  CHECK(matching(rig, "2 > reported.x") == S{"n1", "n15"});
}

TEST_CASE("LIKE is case-sensitive; % is any run; other wildcards are plain characters") {
  On on;
  Rig& rig = on.rig;
  report(rig, "a", {{"fw", "1.2.3"}});
  report(rig, "b", {{"fw", "1.10"}});
  report(rig, "c", {{"fw", "2.0*"}});
  report(rig, "d", {{"fw", "V1.2"}});
  report(rig, "e", {{"fw", 1.2}});
  using S = std::set<std::string>;
  CHECK(matching(rig, "reported.fw LIKE '1.%'") == S{"a", "b"});
  CHECK(matching(rig, "reported.fw LIKE '%1.2%'") == S{"a", "d"});
  CHECK(matching(rig, "reported.fw LIKE 'v%'").empty());
  CHECK(matching(rig, "reported.fw LIKE '2.0*'") == S{"c"});
  CHECK(matching(rig, "reported.fw LIKE '2.0?'").empty());
  CHECK(matching(rig, "id LIKE '%'").size() == 5);
}

// Random queries over a fleet of mixed types: the SQL the store compiles and the reference
// evaluator must agree on every one (what each means is stated once, in twins/query_eval.cc).
TEST_CASE("the store's SQL and the reference evaluator agree on generated queries") {
  On on;
  Rig& rig = on.rig;
  std::mt19937 rng(20261205);
  auto pick = [&rng](const auto& v) { return v[rng() % v.size()]; };
  const std::vector<json> values = {1,
                                    2,
                                    -1,
                                    0,
                                    1.5,
                                    2.0,
                                    1e300,
                                    "1",
                                    "a",
                                    "ab",
                                    "a%b",
                                    "",
                                    "B",
                                    true,
                                    false,
                                    nullptr,
                                    json::object(),
                                    json{{"x", 1}},
                                    json{{"x", "a"}},
                                    json::array({1})};
  for (int i = 0; i < 60; ++i) {
    const std::string id = "g-" + std::to_string(i);
    json state = json::object();
    for (const char* key : {"a", "b", "c"}) {
      if (rng() % 4 != 0) state[key] = pick(values);
    }
    if (i % 3 == 0) {
      rig.device(id, InboundKind::kStatus, R"({"state":"online","interval_s":10})");
    }
    report(rig, id, state);
    if (i % 4 == 0) {
      PatchTwin tags;
      tags.settings.tags = {true, json{{"site", pick(values)}}};
      REQUIRE(rig.call(id, tags).status);
    }
    if (i % 5 == 0) {
      REQUIRE(rig.call(id, UpdateDesired{json{{"a", pick(values)}}, false, {}}).status);
    }
  }
  rig.store->flush();
  const std::vector<std::string> fields = {"reported.a",
                                           "reported.b",
                                           "reported.c",
                                           "reported.a.x",
                                           "desired.a",
                                           "tags.site",
                                           "id",
                                           "version",
                                           "reported_version",
                                           "liveness.state",
                                           "liveness.last_seen",
                                           "connection.state",
                                           "reconcile.state",
                                           "reconcile.attempts",
                                           "device.encoding"};
  const std::vector<std::string> literals = {
      "1",  "2",   "-1",   "0",     "1.5",   "2.0",      "'1'",   "'a'",    "'ab'",
      "''", "'B'", "TRUE", "FALSE", "1e300", "'online'", "'g-1'", "'fresh'"};
  const std::vector<std::string> ops = {"=", "!=", "<", "<=", ">", ">="};
  const std::vector<std::string> patterns = {"'a%'", "'%b'", "'%'", "'a%b'", "'%a%'", "'g-1%'"};
  std::function<std::string(int)> expr = [&](int depth) -> std::string {
    const unsigned kind = rng() % (depth > 0 ? 10 : 6);
    switch (kind) {
      case 0:
        return pick(fields) + " " + pick(ops) + " " + pick(literals);
      case 1:
        return pick(literals) + " " + pick(ops) + " " + pick(fields);
      case 2:
        return pick(fields) + " " + pick(ops) + " " + pick(fields);
      case 3:
        return "EXISTS(" + pick(fields) + ")";
      case 4:
        return pick(fields) + (rng() % 2 ? " NOT IN (" : " IN (") + pick(literals) + ", " +
               pick(literals) + ", " + pick(literals) + ")";
      case 5:
        return pick(fields) + " LIKE " + pick(patterns);
      case 6:
        return "NOT " + expr(depth - 1);
      case 7:
        return "(" + expr(depth - 1) + " OR " + expr(depth - 1) + ")";
      default:
        return "(" + expr(depth - 1) + " AND " + expr(depth - 1) + ")";
    }
  };
  const auto fleet = records(rig);
  REQUIRE(fleet.size() == 60);
  size_t nonempty = 0;
  for (int i = 0; i < 400; ++i) {
    const std::string q = expr(3);
    const auto v = ids(rig, q);
    const std::set<std::string> found(v.begin(), v.end());
    CHECK_MESSAGE(found == oracle(fleet, q), "the store and the evaluator differ on: " << q);
    auto counted = rig.store->count_where(**parse_query(q), std::nullopt, {});
    REQUIRE(counted);
    CHECK(counted->count == found.size());
    nonempty += found.empty() || found.size() == fleet.size() ? 0 : 1;
  }
  // The queries discriminate: most select some twins and not others.
  CHECK(nonempty > 100);
}

TEST_CASE("fields compared with fields; every fixed field; read your writes") {
  On on;
  Rig& rig = on.rig;
  rig.device("p-1", InboundKind::kStatus, R"({"state":"online","interval_s":10})");
  report(rig, "p-1", {{"mode", "eco"}});
  rig.device("p-2", InboundKind::kStatus, R"({"state":"online","interval_s":10})");
  report(rig, "p-2", {{"mode", "eco"}});
  REQUIRE(rig.call("p-3", ProvisionTwin{}).status);
  using S = std::set<std::string>;
  // Read your writes: a query after the answer sees the change.
  REQUIRE(rig.call("p-1", UpdateDesired{json{{"mode", "boost"}}, false, {}}).status);
  CHECK(matching(rig, "desired.mode != reported.mode") == S{"p-1"});
  CHECK(matching(rig, "desired.mode = reported.mode").empty());
  CHECK(matching(rig, "reconcile.state = 'pending'") == S{"p-1"});
  CHECK(matching(rig, "desired_version = 1 AND version = 2") == S{"p-1"});
  CHECK(matching(rig, "reported_version = 1") == S{"p-1", "p-2"});
  // A literal of a family the field cannot hold binds nothing (it once left a parameter unused,
  // which SQLite refuses: a 503 for a valid query).
  CHECK(matching(rig, "reported_version IN ('1', 1, TRUE)") == S{"p-1", "p-2"});
  CHECK(matching(rig, "connection.state = 'online'") == S{"p-1", "p-2"});
  CHECK(matching(rig, "connection.state = 'unknown'") == S{"p-3"});
  CHECK(matching(rig, "EXISTS(liveness.last_seen)") == S{"p-1", "p-2"});
  CHECK(matching(rig, "liveness.state = 'fresh'") == S{"p-1", "p-2"});
  CHECK(matching(rig, "device.encoding = 'json'").size() == 3);
  CHECK(matching(rig, "reconcile.attempts >= 1") == S{"p-1"});
  CHECK(matching(rig, "created_at > 0 AND updated_at >= created_at").size() == 3);
  // Commands: queued while the device is offline.
  CommandRequest c;
  c.name = "reboot";
  REQUIRE(rig.call("p-3", EnqueueCommand{c}).status);
  CHECK(matching(rig, "commands.queued = 1") == S{"p-3"});
  CHECK(matching(rig, "commands.sent > 0").empty());
  // The clock passes the stale window of the online devices (3 x 10 s).
  rig.clock.advance(31'000);
  rig.store->flush();  // the alarms' writes
  CHECK(matching(rig, "liveness.state = 'stale'") == S{"p-1", "p-2"});
  PatchTwin tags;
  tags.settings.tags = {true, json{{"site", "berlin"}}};
  REQUIRE(rig.call("p-2", tags).status);
  CHECK(matching(rig, "tags.site = 'berlin' AND liveness.state = 'stale'") == S{"p-2"});
  CHECK(matching(rig, "id = 'p-3' OR (tags.site = 'berlin' AND NOT id = 'p-2')") == S{"p-3"});
}

TEST_CASE("counts, by any field's value") {
  On on;
  Rig& rig = on.rig;
  for (int i = 0; i < 10; ++i) {
    report(rig, "c-" + std::to_string(i),
           {{"fw", i < 6   ? json("1.0")
                   : i < 9 ? json(2)
                           : json(true)}});
  }
  REQUIRE(rig.call("c-x", ProvisionTwin{}).status);
  auto all = parse_query("");
  auto by_fw = rig.store->count_where(**all, *parse_query_field("reported.fw"), {});
  REQUIRE(by_fw);
  CHECK(by_fw->count == 11);
  std::map<std::string, uint64_t> groups;
  for (const auto& g : by_fw->groups) groups[g.value.dump()] = g.count;
  CHECK(groups ==
        std::map<std::string, uint64_t>{{"\"1.0\"", 6}, {"2", 3}, {"true", 1}, {"null", 1}});
  auto live = rig.store->count_where(**parse_query("connection.state = 'online'"),
                                     *parse_query_field("liveness.state"), {});
  REQUIRE(live);
  CHECK(live->count == 10);
  REQUIRE(live->groups.size() == 1);
  CHECK(live->groups[0].value == "fresh");
  auto plain = rig.store->count_where(**parse_query("reported.fw = 2"), std::nullopt, {});
  REQUIRE(plain);
  CHECK(plain->count == 3);
  CHECK(plain->groups.empty());
  CHECK_FALSE(by_fw->truncated);
  // At most max_groups groups, the largest; the count still covers every twin.
  ReadBudget two;
  two.max_groups = 2;
  auto capped = rig.store->count_where(**all, *parse_query_field("reported.fw"), two);
  REQUIRE(capped);
  CHECK(capped->count == 11);
  CHECK(capped->truncated);
  REQUIRE(capped->groups.size() == 2);
  CHECK(capped->groups[0].value == "1.0");
  CHECK(capped->groups[0].count == 6);
  CHECK(capped->groups[1].value == 2);
  // One group per twin (group_by=id) stays bounded too.
  auto by_id = rig.store->count_where(**all, *parse_query_field("id"), two);
  REQUIRE(by_id);
  CHECK(by_id->count == 11);
  CHECK(by_id->groups.size() == 2);
  CHECK(by_id->truncated);
}

TEST_CASE("a fleet read past its deadline stops with kTimeout; the store reads on afterwards") {
  On on;
  Rig& rig = on.rig;
  for (int i = 0; i < 500; ++i) report(rig, "d-" + std::to_string(i), {{"n", i}});
  auto where = parse_query("reported.n >= 0");
  REQUIRE(where);
  ReadBudget past;
  past.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  auto counted = rig.store->count_where(**where, *parse_query_field("reported.n"), past);
  REQUIRE_FALSE(counted);
  CHECK(counted.status().code() == StatusCode::kTimeout);
  TwinQuery q;
  q.where = where->get();
  q.order = *parse_query_order("reported.n desc");
  q.budget = past;
  auto page = rig.store->query(q);
  REQUIRE_FALSE(page);
  CHECK(page.status().code() == StatusCode::kTimeout);
  // Within its budget the same read answers, on the same readers.
  q.budget.deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  auto again = rig.store->query(q);
  REQUIRE(again);
  CHECK(again->first.size() == 100);
  CHECK(rig.store->count_where(**where, std::nullopt, {})->count == 500);
}

TEST_CASE("keyset paging over changing data: no duplicates, nothing skipped that stayed put") {
  On on;
  Rig& rig = on.rig;
  const uint32_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int n = 300;
  for (int i = 0; i < n; ++i) {
    json state = json::object();
    switch (rng() % 4) {  // numbers with ties, strings, missing
      case 0:
        state["n"] = static_cast<int>(rng() % 20);
        break;
      case 1:
        state["n"] = std::string(1, static_cast<char>('a' + rng() % 5));
        break;
      case 2:
        state["n"] = 0.5 * static_cast<double>(rng() % 10);
        break;
      default:
        state["other"] = 1;
    }
    report(rig, "k-" + std::to_string(i), state);
  }
  for (const char* order : {"reported.n", "reported.n desc", "id desc", "version"}) {
    INFO("order_by " << order);
    TwinQuery q;
    auto where = parse_query("");
    q.where = where->get();
    q.order = *parse_query_order(order);
    q.limit = 7;
    std::vector<std::string> seen;
    std::set<std::string> moved;
    int created = 0;
    while (true) {
      auto page = rig.store->query(q);
      REQUIRE(page);
      for (const auto& t : page->first) seen.push_back(t.twin.id);
      if (!page->second) break;
      q.after = page->second;
      // Between pages: some twins change their sort key, new ones appear.
      for (int k = 0; k < 3; ++k) {
        const std::string id = "k-" + std::to_string(rng() % n);
        moved.insert(id);
        report(rig, id, {{"n", static_cast<int>(rng() % 20)}});
      }
      report(rig, "new-" + std::string(order) + std::to_string(created++), {{"n", 3}});
    }
    std::map<std::string, int> times;
    for (const auto& id : seen) ++times[id];
    for (int i = 0; i < n; ++i) {
      const std::string id = "k-" + std::to_string(i);
      if (moved.count(id) == 0) CHECK_MESSAGE(times[id] == 1, id);
    }
    // And the order holds among the page contents as read.
    CHECK(seen.size() >= static_cast<size_t>(n) - moved.size());
  }
}

#ifndef DOPPEL_TEST_POSTGRES
TEST_CASE("indexed equalities read their index") {
  OnSqlite on({"reported.fw", "tags.site"});
  SqliteRig& rig = on.rig;
  report(rig, "i-1", {{"fw", "1.2"}});
  auto plan = [&](const std::string& text, const std::string& order = "",
                  std::optional<QueryCursor> after = std::nullopt) {
    auto where = parse_query(text);
    REQUIRE(where);
    TwinQuery q;
    q.where = where->get();
    q.order = *parse_query_order(order);
    q.after = std::move(after);
    auto p = rig.store->query_plan(q);
    REQUIRE_MESSAGE(p, p.status().to_string());
    return *p;
  };
  CHECK(plan("reported.fw = '1.2'").find("INDEX twins_q_reported_fw") != std::string::npos);
  CHECK(plan("tags.site = 'berlin'").find("INDEX twins_q_tags_site") != std::string::npos);
  CHECK(plan("liveness.state = 'stale'").find("INDEX twins_by_liveness") != std::string::npos);
  CHECK(plan("reconcile.state = 'failed'").find("INDEX twins_by_reconcile") != std::string::npos);
  CHECK(plan("connection.state IN ('online', 'offline')").find("twins_by_connection") !=
        std::string::npos);
  // Unindexed: a scan (of the table, or of the id index for the order).
  CHECK(plan("reported.temp > 3").find("SCAN") != std::string::npos);
  // Pages in id order need no sorting.
  CHECK(plan("liveness.state = 'stale'").find("TEMP B-TREE") == std::string::npos);
  // The index also serves an order on its field.
  CHECK(plan("", "reported.fw").find("twins_q_reported_fw") != std::string::npos);
  // Later pages start inside the index, not at its beginning.
  CHECK(plan("", "reported.fw", QueryCursor{"1.2", "i-1"}).find("SEARCH") != std::string::npos);
  CHECK(plan("", "", QueryCursor{"i-1", "i-1"}).find("SEARCH") != std::string::npos);
  CHECK(plan("liveness.state = 'fresh'", "", QueryCursor{"i-1", "i-1"})
            .find("(liveness=? AND id>?)") != std::string::npos);
}

#endif

// Regression: the parser accepted queries SQLite could not prepare (NOT x 43: parser stack
// overflow; OR nested 29 deep; an IN list or OR chain of ~1,000 terms: expression tree too
// large), and a job's target query failed the whole group commit it ran in.
TEST_CASE("every query at the parser's limits prepares on the store") {
  On on;
  Rig& rig = on.rig;
  report(rig, "d-1", {{"a", 1}, {"b", 1}});
  auto check = [&](const std::string& text) {
    auto where = parse_query(text);
    REQUIRE_MESSAGE(where, where.status().to_string());
    const Status s = doppel::testing::prepares_everywhere(*rig.store, **where);
    CHECK_MESSAGE(s, text.substr(0, 80), "...: ", s.to_string().substr(0, 200), " ... ",
                  s.message().substr(s.message().size() > 60 ? s.message().size() - 60 : 0));
  };
  // The heaviest leaf: a field-to-field comparison of two JSON fields.
  const std::string leaf = "reported.a = desired.b";
  // Alternating AND / OR, one level of parentheses each.
  {
    std::string q = leaf;
    for (int i = 0; i < kMaxQueryDepth; ++i) {
      q = "(" + leaf + (i % 2 == 0 ? " OR " : " AND ") + "reported.c > tags.d " +
          (i % 2 == 0 ? " OR " : " AND ") + q + ")";
    }
    check(q);
  }
  // NOT and parentheses alternating, each NOT over a chain.
  {
    std::string q = leaf;
    for (int i = 0; i < kMaxQueryDepth / 2; ++i) {
      q = "NOT (" + leaf + (i % 2 == 0 ? " OR " : " AND ") + q + ")";
    }
    check(q);
  }
  // NOTs alone, and parentheses alone.
  std::string nots;
  for (int i = 0; i < kMaxQueryDepth; ++i) nots += "NOT ";
  check(nots + leaf);
  check(std::string(kMaxQueryDepth, '(') + leaf + std::string(kMaxQueryDepth, ')'));
  // As many terms as 4 KiB holds: an OR chain, an AND chain, an IN list, with nesting around.
  {
    std::string ors = "id = 'x0'";
    for (int i = 1; ors.size() + 16 < kMaxQueryBytes; ++i)
      ors += " OR id = 'x" + std::to_string(i) + "'";
    check(ors);
    std::string ands = "version > 0";
    while (ands.size() + 20 < kMaxQueryBytes) ands += " AND version > 0";
    check(ands);
    std::string in = "reported.a IN (0";
    for (int i = 1; in.size() + 8 < kMaxQueryBytes; ++i) in += "," + std::to_string(i);
    check(in + ")");
    std::string nested = "reported.a = 1";
    for (int i = 0; i < kMaxQueryDepth / 2; ++i) nested = "NOT (" + nested + " OR reported.a = 2)";
    while (nested.size() + 24 < kMaxQueryBytes) nested += " AND reported.b != 'z'";
    check(nested);
  }
  // And what the limits refuse is refused at parse time, naming the limit.
  std::string deeper =
      std::string(kMaxQueryDepth + 1, '(') + leaf + std::string(kMaxQueryDepth + 1, ')');
  auto refused = parse_query(deeper);
  REQUIRE_FALSE(refused);
  CHECK(refused.status().message().find("(the limit)") != std::string::npos);
}
