// As-of reads against a real store: the runtime (shards inline, a fake clock) on a SQLite file, and
// (built again with DOPPEL_TEST_POSTGRES) on PostgreSQL.
// A randomized sequence of operations — desired patches and replaces, reports, settings,
// connections, commands, alarms as the clock moves — records what GET answered after each one;
// afterwards every as-of read by time, and by version for the operations that made one, must
// answer exactly that (the fields history keeps). After pruning, each read either still answers
// exactly that or is refused as gone, and the ones after the cut always answer.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>
#include <set>

#include "tests/support/sqlite_rig.h"
#ifdef DOPPEL_TEST_POSTGRES
#include "tests/support/postgres_rig.h"
#endif
#include "tests/support/temp_dir.h"
#include "twins/as_of.h"
#include "twins/query.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::SqliteRig;
using doppel::testing::TempDir;

namespace {

// The stores under test.
struct OnSqlite {
  TempDir dir{"doppel-history-"};
  SqliteRig rig{dir.file("doppel.db")};
};
#ifdef DOPPEL_TEST_POSTGRES
struct OnPostgres {
  testing::PostgresRuntimeRig rig;
};
using On = OnPostgres;
#else
using On = OnSqlite;
#endif
using Rig = decltype(On::rig);

// The fields of a twin document that an as-of read answers.
json kept(const json& doc) {
  return {{"id", doc["id"]},
          {"version", doc["version"]},
          {"desired", doc["desired"]},
          {"reported", doc["reported"]},
          {"delta", doc["delta"]},
          {"desired_version", doc["desired_version"]},
          {"reported_version", doc["reported_version"]},
          {"connection", {{"state", doc["connection"]["state"]}}},
          {"liveness", {{"state", doc["liveness"]["state"]}}},
          {"reconcile",
           {{"state", doc["reconcile"]["state"]},
            {"attempts", doc["reconcile"]["attempts"]},
            {"desired_version", doc["reconcile"]["desired_version"]}}},
          {"commands",
           {{"strategy", doc["commands"]["strategy"]},
            {"queued", doc["commands"]["queued"]},
            {"sent", doc["commands"]["sent"]}}},
          {"stale_after_s", doc["stale_after_s"]},
          {"tags", doc["tags"]},
          {"created_at", doc["created_at"]}};
}

// The as-of answer, without its position, or nullopt when the store cannot answer.
std::optional<json> as_of(Rig& rig, const std::string& id, const AsOf& at) {
  auto slice = rig.store->history_slice(id, at);
  REQUIRE(slice);
  uint64_t seq = 0;
  Millis ts = 0;
  auto state = rebuild(*slice, &seq, &ts);
  if (!state) {
    REQUIRE_MESSAGE(state.status().code() == StatusCode::kNotFound, state.status().to_string());
    return std::nullopt;
  }
  json doc = as_of_document(id, *state, seq, ts);
  doc.erase("as_of");
  return doc;
}

struct Recorded {
  Millis at = 0;
  bool made_version = false;
  json doc;
};

json random_object(std::mt19937& rng, bool with_nulls) {
  static const char* const keys[] = {"mode", "fan", "led", "cfg", "limit"};
  json o = json::object();
  const int n = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < n; ++i) {
    const std::string k = keys[rng() % 5];
    switch (rng() % 5) {
      case 0:
        o[k] = static_cast<int>(rng() % 4);
        break;
      case 1:
        o[k] = rng() % 2 == 0 ? "eco" : "boost";
        break;
      case 2:
        o[k] = {{"a", static_cast<int>(rng() % 3)}, {"b", rng() % 2 == 0}};
        break;
      case 3:
        o[k] = with_nulls ? json() : json(1.5);
        break;
      default:
        o[k] = json::array({1, static_cast<int>(rng() % 3)});
    }
  }
  return o;
}

// Runs `steps` random operations on a few twins; returns what GET answered after each.
std::vector<std::pair<std::string, Recorded>> run_random(Rig& rig, uint32_t seed, int steps) {
  std::mt19937 rng(seed);
  const std::vector<std::string> ids = {"h-1", "h-2", "h-3"};
  std::vector<std::pair<std::string, Recorded>> out;
  for (const auto& id : ids) {
    TwinSettings s;
    s.tags = {true, json{{"site", "berlin"}}};
    REQUIRE(rig.call(id, ProvisionTwin{s}).status);
    out.push_back({id, Recorded{rig.clock.now_ms(), true, rig.call(id, GetTwin{}).body}});
  }
  for (int step = 0; step < steps; ++step) {
    // Time moves between operations (alarms fire on the way), so each has its own moment.
    rig.clock.advance(rng() % 8 == 0 ? 1 + static_cast<Millis>(rng() % 400'000) : 1 + rng() % 50);
    const std::string& id = ids[rng() % ids.size()];
    const json before = rig.call(id, GetTwin{}).body;
    const uint64_t version_before = before["version"].get<uint64_t>();
    switch (rng() % 10) {
      case 0:
      case 1:
        rig.call(id, UpdateDesired{random_object(rng, true), false, {}});
        break;
      case 2:
        rig.call(id, UpdateDesired{random_object(rng, false), true, {}});
        break;
      case 3:
      case 4:
        rig.device(id, InboundKind::kReported, json{{"state", random_object(rng, true)}}.dump());
        break;
      case 5: {
        TwinSettings s;
        if (rng() % 2 == 0) s.tags = {true, json{{"site", rng() % 2 == 0 ? "berlin" : "paris"}}};
        if (rng() % 2 == 0) s.stale_after_s = {true, static_cast<double>(60 + rng() % 600)};
        if (rng() % 3 == 0) {
          s.command_strategy =
              rng() % 2 == 0 ? CommandStrategy::kBurst : CommandStrategy::kSequential;
        }
        rig.call(id, PatchTwin{s});
        break;
      }
      case 6:
        rig.device(
            id, InboundKind::kStatus,
            rng() % 3 == 0 ? R"({"state":"offline"})" : R"({"state":"online","interval_s":60})");
        break;
      case 7: {
        CommandRequest c;
        c.name = "reboot";
        rig.call(id, EnqueueCommand{c});
        break;
      }
      case 8: {
        // Answer the oldest command the device was sent, or cancel a queued one.
        const json listed = rig.call(id, ListCommands{}).body;
        for (const auto& c : listed["items"]) {
          if (c["status"] == "sent") {
            rig.device(id, InboundKind::kCommandResult,
                       rng() % 2 == 0 ? R"({"status":"succeeded"})" : R"({"status":"failed"})",
                       c["id"].get<std::string>());
            break;
          }
          if (c["status"] == "queued") {
            rig.call(id, CancelCommand{c["id"].get<std::string>()});
            break;
          }
        }
        break;
      }
      default:
        // A report of what is desired: reconciliation converges.
        rig.device(id, InboundKind::kReported,
                   json{{"state", rig.call(id, GetTwin{}).body["delta"]}}.dump());
    }
    const json doc = rig.call(id, GetTwin{}).body;
    // The store's query columns follow every state change (they are rewritten only when the
    // states change: a missed one would show here).
    rig.store->flush();
    auto where = parse_query(
        "id = '" + id + "' AND liveness.state = '" + doc["liveness"]["state"].get<std::string>() +
        "' AND connection.state = '" + doc["connection"]["state"].get<std::string>() +
        "' AND reconcile.state = '" + doc["reconcile"]["state"].get<std::string>() +
        "' AND reconcile.attempts = " + std::to_string(doc["reconcile"]["attempts"].get<int>()) +
        " AND commands.queued = " + std::to_string(doc["commands"]["queued"].get<int>()) +
        " AND version = " + std::to_string(doc["version"].get<uint64_t>()));
    REQUIRE(where);
    auto counted = rig.store->count_where(**where, std::nullopt, {});
    REQUIRE(counted);
    CHECK_MESSAGE(counted->count == 1, doc.dump());
    out.push_back(
        {id, Recorded{rig.clock.now_ms(), doc["version"].get<uint64_t>() != version_before, doc}});
  }
  return out;
}

}  // namespace

TEST_CASE("as-of reads answer what GET answered then, over a random sequence of operations") {
  On on;
  Rig& rig = on.rig;
  const uint32_t seed = std::random_device{}();
  INFO("seed " << seed);
  const auto recorded = run_random(rig, seed, 600);
  rig.store->flush();

  size_t by_version = 0;
  for (const auto& [id, r] : recorded) {
    INFO("twin " << id << " at " << r.at << ", version " << r.doc["version"]);
    const auto at_time = as_of(rig, id, AsOf{std::nullopt, r.at});
    REQUIRE(at_time);
    CHECK(*at_time == kept(r.doc));
    if (r.made_version) {
      const auto at_version = as_of(rig, id, AsOf{r.doc["version"].get<uint64_t>(), std::nullopt});
      REQUIRE(at_version);
      CHECK(*at_version == kept(r.doc));
      ++by_version;
    }
  }
  CHECK(by_version > 100);
  // The sequence went through the states history must tell.
  std::set<std::string> seen;
  for (const auto& [id, r] : recorded) {
    seen.insert("connection." + r.doc["connection"]["state"].get<std::string>());
    seen.insert("liveness." + r.doc["liveness"]["state"].get<std::string>());
    seen.insert("reconcile." + r.doc["reconcile"]["state"].get<std::string>());
    if (r.doc["commands"]["queued"].get<int>() > 0) seen.insert("commands.queued");
    if (r.doc["commands"]["sent"].get<int>() > 0) seen.insert("commands.sent");
    if (r.doc["commands"]["strategy"] == "burst") seen.insert("strategy.burst");
    if (r.doc["tags"]["site"] == "paris") seen.insert("tags.paris");
  }
  for (const char* s : {"connection.online", "connection.offline", "liveness.fresh",
                        "liveness.stale", "reconcile.pending", "reconcile.converged",
                        "commands.queued", "commands.sent", "strategy.burst", "tags.paris"}) {
    CHECK_MESSAGE(seen.count(s) == 1, s);
  }
  // Replay is bounded by the snapshots: there are several per twin.
  auto slice = rig.store->history_slice("h-1", AsOf{std::nullopt, rig.clock.now_ms()});
  REQUIRE(slice);
  REQUIRE(slice->base);
  CHECK(slice->events.size() <= 3 * kSnapshotEveryEvents);
}

TEST_CASE("after pruning, as-of reads answer exactly or are gone, and those after the cut answer") {
  On on;
  Rig& rig = on.rig;
  const uint32_t seed = std::random_device{}();
  INFO("seed " << seed);
  const auto recorded = run_random(rig, seed, 400);
  rig.store->flush();
  const Millis cut = recorded[recorded.size() / 2].second.at;
  auto pruned = rig.store->prune_events(cut, UINT64_MAX);
  REQUIRE(pruned);
  CHECK(*pruned > 0);

  size_t gone = 0;
  for (const auto& [id, r] : recorded) {
    INFO("twin " << id << " at " << r.at << " (cut " << cut << ")");
    const auto at_time = as_of(rig, id, AsOf{std::nullopt, r.at});
    if (r.at >= cut) {
      REQUIRE(at_time);
    }
    if (at_time) {
      CHECK(*at_time == kept(r.doc));
    } else {
      ++gone;
    }
    if (r.made_version) {
      const auto at_version = as_of(rig, id, AsOf{r.doc["version"].get<uint64_t>(), std::nullopt});
      if (r.at >= cut) REQUIRE(at_version);
      if (at_version) CHECK(*at_version == kept(r.doc));
    }
  }
  CHECK(gone > 0);

  // The cap on reported events removes some in the middle: reads across them are gone, never
  // wrong; the newest state always answers.
  REQUIRE(rig.store->prune_events(0, 5));
  for (const auto& [id, r] : recorded) {
    if (const auto at_time = as_of(rig, id, AsOf{std::nullopt, r.at})) {
      CHECK(*at_time == kept(r.doc));
    }
  }
  for (const char* id : {"h-1", "h-2", "h-3"}) {
    const auto now = as_of(rig, id, AsOf{std::nullopt, rig.clock.now_ms()});
    REQUIRE(now);
    CHECK(*now == kept(rig.call(id, GetTwin{}).body));
  }
}

TEST_CASE("a twin's snapshots go with it; a new incarnation starts its own history") {
  On on;
  Rig& rig = on.rig;
  REQUIRE(rig.call("re", ProvisionTwin{}).status);
  rig.clock.advance(10);
  REQUIRE(rig.call("re", UpdateDesired{json{{"a", 1}}, false, {}}).status);
  rig.clock.advance(10);
  const Millis first_life = rig.clock.now_ms();
  REQUIRE(rig.call("re", DeleteTwin{}).status);
  rig.store->flush();
  CHECK_FALSE(rig.store->history_slice("re", AsOf{std::nullopt, first_life})->base);

  rig.clock.advance(10);
  TwinSettings s;
  s.desired = json{{"b", 2}};
  REQUIRE(rig.call("re", ProvisionTwin{s}).status);
  rig.store->flush();
  // Version 0 never existed in this incarnation: it was created with a desired state.
  const auto v0 = rig.store->history_slice("re", AsOf{0, std::nullopt});
  REQUIRE(v0);
  CHECK_FALSE(v0->base);
  CHECK(v0->before_creation);
  const auto v1 = as_of(rig, "re", AsOf{1, std::nullopt});
  REQUIRE(v1);
  CHECK((*v1)["desired"] == json{{"b", 2}});
}
