// Jobs against the real store and the runtime (inline, fake clock): snapshot and continuous
// targeting, how executions end (convergence, supersession, a command's end and its retries,
// timeouts, a missing or deleted twin), the rate, abort, cancel, and a restart that neither
// loses nor repeats an execution. The engine runs no thread here: each step is tick() + flush().
// On SQLite, and (built again with DOPPEL_TEST_POSTGRES) on PostgreSQL.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <set>

#include "tests/support/sqlite_rig.h"
#ifdef DOPPEL_TEST_POSTGRES
#include "tests/support/postgres_rig.h"
#endif
#include "tests/support/temp_dir.h"
#include "twins/job_engine.h"

using namespace doppel;
using namespace doppel::twins;
using doppel::testing::SqliteRig;
using doppel::testing::TempDir;

namespace {

// Where a store lives (kept across a restart), and the runtime over it.
#ifdef DOPPEL_TEST_POSTGRES
struct Place {
  std::string where = testing::shared_postgres().create_database();
};
using StoreRig = testing::PostgresRuntimeRig;
#else
struct Place {
  TempDir dir{"doppel-jobs-"};
  std::string where = dir.file("doppel.db");
};
using StoreRig = SqliteRig;
#endif

struct JobRig {
  explicit JobRig(const std::string& where) : rig(where) {
    JobEngineOptions o;
    o.threaded = false;
    o.rescan_every_ms = 1000;
    engine = std::make_unique<JobEngine>(o, *rig.runtime, *rig.store, rig.clock, rig.metrics);
    REQUIRE(engine->start());
  }
  // One dispatch round, its writes committed and their replies drained (a second round).
  void round() {
    for (int i = 0; i < 3; ++i) {
      engine->tick();
      rig.store->flush();
    }
  }
  // `ms` of fake time in steps of `step`, a round after each.
  void run_for(Millis ms, Millis step = 100) {
    for (Millis t = 0; t < ms; t += step) {
      rig.clock.advance(step);
      round();
    }
  }
  json create(const json& body) {
    auto spec = parse_job_spec(body, Limits{});
    REQUIRE_MESSAGE(spec, spec.status().to_string());
    auto doc = engine->create(std::move(*spec), Cause{CauseSource::kApi, "req-1", {}, {}, {}});
    REQUIRE_MESSAGE(doc, doc.status().to_string());
    return *doc;
  }
  // The job document; its counts (kept by the store's writer) must equal the executions'.
  json job(const std::string& id) {
    auto doc = engine->get(id);
    REQUIRE_MESSAGE(doc, doc.status().to_string());
    std::map<std::string, uint64_t> counted;
    for (const auto& [twin, e] : executions(id)) ++counted[std::string(to_string(e.status))];
    for (const auto& [status, n] : (*doc)["counts"].items()) {
      CHECK_MESSAGE(n.get<uint64_t>() == counted[status], id, " ", status);
    }
    return *doc;
  }
  std::map<std::string, ExecutionRecord> executions(const std::string& id) {
    auto rows = rig.store->executions(id, std::nullopt, "", 100000);
    REQUIRE(rows);
    std::map<std::string, ExecutionRecord> out;
    for (auto& e : *rows) out[e.twin] = e;
    return out;
  }
  json twin(const std::string& id) {
    auto r = rig.call(id, GetTwin{});
    REQUIRE_MESSAGE(r.status, r.status.to_string());
    return r.body;
  }
  void provision(const std::string& id, const json& body) {
    auto settings = parse_twin_settings(body, false, Limits{});
    REQUIRE(settings);
    auto r = rig.call(id, ProvisionTwin{*settings});
    REQUIRE_MESSAGE(r.status, r.status.to_string());
  }
  void report(const std::string& id, const json& state) {
    rig.device(id, InboundKind::kReported, json{{"state", state}}.dump());
    rig.store->flush();
  }
  // Commands of the twin as the API lists them.
  json commands(const std::string& id) {
    auto r = rig.call(id, ListCommands{});
    REQUIRE(r.status);
    return r.body["items"];
  }

  StoreRig rig;
  std::unique_ptr<JobEngine> engine;
};

uint64_t count_of(const json& job, const char* status) {
  return job["counts"][status].get<uint64_t>();
}

// A cluster node's view (twins/ownership.h): every partition but those listed.
struct AllBut final : Ownership {
  std::set<uint32_t> not_served;
  bool serves(uint32_t p) const override { return not_served.count(p) == 0; }
  std::vector<uint32_t> serving() const override {
    std::vector<uint32_t> out;
    for (uint32_t p = 0; p < kPartitions; ++p) {
      if (serves(p)) out.push_back(p);
    }
    return out;
  }
  std::vector<uint32_t> take_gained() override { return {}; }
};

// The other node: a second engine over the same runtime runs what is sent to it.
struct ToPeer final : RemoteJobs {
  JobEngine* peer = nullptr;
  std::vector<std::string> sent;
  void run(const JobRecord& job, std::vector<std::string> twins, Reply reply) override {
    sent.insert(sent.end(), twins.begin(), twins.end());
    peer->run_for_peer(job.id, job.created_at, std::move(twins),
                       [reply](const JobEngine::PeerResults& results) {
                         for (const auto& [twin, status] : results) reply(twin, status);
                       });
  }
};

}  // namespace

TEST_CASE("a cluster node runs its partitions' jobs, reaches other twins through their owner") {
  Place place;
  JobRig j(place.where);  // its engine plays the node that owns half of the twins
  AllBut ownership;
  ToPeer remote;
  remote.peer = j.engine.get();
  const std::string id = "eco-c";
  std::set<std::string> elsewhere;
  for (int i = 0; i < 10; ++i) {
    const std::string twin = "c-" + std::to_string(i);
    j.provision(twin, {});
    if (i % 2 == 0 && partition_of(twin) != partition_of(id)) {
      ownership.not_served.insert(partition_of(twin));
      elsewhere.insert(twin);
    }
  }
  REQUIRE(elsewhere.size() >= 3);
  JobEngineOptions o;
  o.threaded = false;
  o.cluster = {&ownership, j.rig.store.get(), &remote};
  Metrics node_metrics;
  JobEngine node(o, *j.rig.runtime, *j.rig.store, j.rig.clock, node_metrics);
  REQUIRE(node.start());
  auto round = [&] {
    for (int i = 0; i < 3; ++i) {
      j.rig.clock.advance(100);
      node.tick();
      j.rig.store->flush();
    }
  };

  auto spec = parse_job_spec(
      {{"id", id},
       {"target",
        {{"twins", {"c-0", "c-1", "c-2", "c-3", "c-4", "c-5", "c-6", "c-7", "c-8", "c-9"}}}},
       {"action", {{"desired", {{"mode", "eco"}}}}},
       {"rate_per_s", 1000}},
      Limits{});
  REQUIRE(spec);
  REQUIRE(node.create(std::move(*spec), Cause{CauseSource::kApi, "req-c", {}, {}, {}}));
  round();
  // The twins served elsewhere went to their owner, and only they; every twin runs the job.
  CHECK(std::set<std::string>(remote.sent.begin(), remote.sent.end()) == elsewhere);
  CHECK(remote.sent.size() == elsewhere.size());
  CHECK(count_of(j.job(id), "in_progress") == 10);
  for (int i = 0; i < 10; ++i) CHECK(j.twin("c-" + std::to_string(i))["desired"]["mode"] == "eco");

  // The node loses the job's partition: it stops running the job at once.
  ownership.not_served.insert(partition_of(id));
  round();
  CHECK(node.running() == 0);
  for (int i = 0; i < 10; ++i) j.report("c-" + std::to_string(i), {{"mode", "eco"}});
  round();
  CHECK(j.job(id)["status"] == "running");  // nobody ran it meanwhile

  // Held again: it takes the job back from the store, reads its counts, and completes it.
  ownership.not_served.erase(partition_of(id));
  round();
  CHECK(node.running() == 0);
  const json job = j.job(id);
  CHECK(job["status"] == "completed");
  CHECK(count_of(job, "succeeded") == 10);
  CHECK(remote.sent.size() == elsewhere.size());  // nothing dispatched twice
}

TEST_CASE("a desired job reaches the twins its query names; each execution ends on convergence") {
  Place place;
  JobRig j(place.where);
  for (int i = 0; i < 4; ++i)
    j.provision("b-" + std::to_string(i), {{"tags", {{"site", "berlin"}}}});
  j.provision("p-0", {{"tags", {{"site", "paris"}}}});
  // Already where the job wants it: the patch changes nothing, the execution succeeds at once.
  j.provision("b-done", {{"tags", {{"site", "berlin"}}}, {"desired", {{"mode", "eco"}}}});
  j.report("b-done", {{"mode", "eco"}});

  const json created = j.create({{"id", "eco"},
                                 {"target", {{"query", "tags.site = 'berlin'"}}},
                                 {"action", {{"desired", {{"mode", "eco"}}}}},
                                 {"rate_per_s", 1000}});
  CHECK(created["status"] == "running");
  CHECK(created["total"] == 5);
  CHECK(count_of(created, "pending") == 5);
  CHECK(created["mode"] == "snapshot");

  j.run_for(100);
  json job = j.job("eco");
  CHECK(count_of(job, "in_progress") == 4);
  CHECK(count_of(job, "succeeded") == 1);
  CHECK(j.executions("eco")["b-done"].status == ExecStatus::kSucceeded);
  for (int i = 0; i < 4; ++i) {
    const json t = j.twin("b-" + std::to_string(i));
    CHECK(t["desired"]["mode"] == "eco");
    CHECK(t["reconcile"]["state"] == "pending");
  }
  CHECK_FALSE(j.twin("p-0")["desired"].contains("mode"));

  // The change the job made carries its cause.
  auto events = j.rig.store->events(EventQuery{0, 1000, {{"b-0"}, {"desired.updated"}}});
  REQUIRE(events);
  REQUIRE(events->events.size() == 1);
  const json ev = event_json(events->events[0]);
  CHECK(ev["cause"]["source"] == "job");
  CHECK(ev["cause"]["job"] == "eco");

  j.report("b-0", {{"mode", "eco"}});
  j.report("b-1", {{"mode", "eco"}});
  j.report("b-2", {{"mode", "normal"}});  // not there yet
  j.round();
  job = j.job("eco");
  CHECK(count_of(job, "succeeded") == 3);
  CHECK(count_of(job, "in_progress") == 2);
  CHECK(job["status"] == "running");

  j.report("b-2", {{"mode", "eco"}});
  j.report("b-3", {{"mode", "eco"}});
  j.round();
  job = j.job("eco");
  CHECK(count_of(job, "succeeded") == 5);
  CHECK(job["status"] == "completed");
  CHECK(j.engine->running() == 0);
  auto job_events = j.rig.store->events(EventQuery{0, 1000, {{}, {"job.*"}}});
  REQUIRE(job_events);
  REQUIRE(job_events->events.size() == 2);
  CHECK(event_json(job_events->events[0])["status"] == "running");
  CHECK(event_json(job_events->events[0])["cause"]["request_id"] == "req-1");
  CHECK(event_json(job_events->events[1])["status"] == "completed");
  CHECK_FALSE(event_json(job_events->events[1]).contains("twin"));
}

TEST_CASE("a later desired change supersedes the job's; an id that does not exist fails") {
  Place place;
  JobRig j(place.where);
  j.provision("s-1", {});
  j.create({{"id", "j"},
            {"target", {{"twins", {"s-1", "ghost"}}}},
            {"action", {{"desired", {{"mode", "eco"}}}}}});
  j.run_for(100);
  auto exec = j.executions("j");
  CHECK(exec["ghost"].status == ExecStatus::kFailed);
  CHECK(exec["ghost"].detail == "not_found");
  CHECK(j.rig.call("ghost", GetTwin{}).status.code() == StatusCode::kNotFound);  // not created
  CHECK(exec["s-1"].status == ExecStatus::kInProgress);

  auto r = j.rig.call("s-1", UpdateDesired{{{"mode", "off"}}, false, std::nullopt});
  REQUIRE(r.status);
  j.round();
  CHECK(j.executions("j")["s-1"].status == ExecStatus::kInProgress);  // not converged yet
  j.report("s-1", {{"mode", "off"}});
  j.round();
  exec = j.executions("j");
  CHECK(exec["s-1"].status == ExecStatus::kSucceeded);
  CHECK(exec["s-1"].detail.find("superseded by desired version 2") != std::string::npos);
  const json job = j.job("j");
  CHECK(job["status"] == "completed");
  CHECK(count_of(job, "failed") == 1);
}

TEST_CASE("dispatch keeps to rate_per_s") {
  Place place;
  JobRig j(place.where);
  for (int i = 0; i < 60; ++i) j.provision("r-" + std::to_string(100 + i), {});
  j.create({{"id", "slow"},
            {"target", {{"query", "id LIKE 'r-%'"}}},
            {"action", {{"desired", {{"fw", "2.0"}}}}},
            {"rate_per_s", 20}});
  for (int step = 1; step <= 25; ++step) {
    j.run_for(100);
    const json job = j.job("slow");
    const uint64_t dispatched = job["total"].get<uint64_t>() - count_of(job, "pending");
    // 20/s over step x 100 ms, plus the burst of 2 it may save up.
    CHECK(dispatched <= static_cast<uint64_t>(2 * step + 2));
    CHECK(dispatched + 2 >= static_cast<uint64_t>(2 * step));
  }
  const json job = j.job("slow");
  CHECK(count_of(job, "pending") == 10);
  CHECK(count_of(job, "in_progress") == 50);
}

TEST_CASE("timeouts count as failures and abort the job; what was pending is cancelled") {
  Place place;
  JobRig j(place.where);
  for (int i = 0; i < 40; ++i) j.provision("t-" + std::to_string(100 + i), {});
  j.create({{"id", "doomed"},
            {"target", {{"query", "EXISTS(id)"}}},
            {"action", {{"desired", {{"mode", "eco"}}}}},
            {"rate_per_s", 10},
            {"timeout_s", 1},
            {"abort", {{"failed_pct", 50}, {"min_done", 5}}}});
  j.run_for(1000);  // ~10 dispatched; none has answered
  j.run_for(1000);  // the first ones time out: 100% of those done failed
  json job = j.job("doomed");
  CHECK(job["status"] == "aborted");
  CHECK(count_of(job, "timed_out") >= 5);
  CHECK(count_of(job, "pending") == 0);
  const uint64_t cancelled = count_of(job, "cancelled");
  CHECK(cancelled >= 15);
  const uint64_t dispatched = 40 - cancelled;
  auto exec = j.executions("doomed");
  size_t patched = 0;
  for (const auto& [twin, e] : exec) {
    const bool has = j.twin(twin)["desired"].contains("mode");
    patched += has ? 1 : 0;
    if (e.status == ExecStatus::kCancelled) {
      CHECK_FALSE(has);
      CHECK(e.detail == "the job was aborted");
    }
  }
  CHECK(patched == dispatched);
  j.run_for(2000);  // nothing more is dispatched; the rest time out
  job = j.job("doomed");
  CHECK(count_of(job, "cancelled") == cancelled);
  CHECK(count_of(job, "in_progress") == 0);
  CHECK(count_of(job, "timed_out") == dispatched);
  CHECK(j.executions("doomed").begin()->second.detail.find("timeout") != std::string::npos);
}

TEST_CASE("cancel: pending executions become cancelled, applied changes stay") {
  Place place;
  JobRig j(place.where);
  for (int i = 0; i < 20; ++i) j.provision("c-" + std::to_string(100 + i), {});
  j.create({{"id", "stop-me"},
            {"target", {{"query", "EXISTS(id)"}}},
            {"action", {{"desired", {{"mode", "eco"}}}}},
            {"rate_per_s", 5}});
  j.run_for(1000);
  auto cancelled = j.engine->cancel("stop-me", Cause{});
  REQUIRE_MESSAGE(cancelled, cancelled.status().to_string());
  CHECK((*cancelled)["status"] == "cancelled");
  const uint64_t applied = count_of(*cancelled, "in_progress");
  CHECK(applied >= 4);
  CHECK(applied <= 6);
  CHECK(count_of(*cancelled, "cancelled") == 20 - applied);
  j.run_for(1000);
  CHECK(count_of(j.job("stop-me"), "cancelled") == 20 - applied);
  size_t patched = 0;
  for (int i = 0; i < 20; ++i) {
    patched += j.twin("c-" + std::to_string(100 + i))["desired"].contains("mode") ? 1 : 0;
  }
  CHECK(patched == applied);
  auto again = j.engine->cancel("stop-me", Cause{});
  CHECK(again.status().code() == StatusCode::kConflict);
  CHECK(j.engine->cancel("nope", Cause{}).status().code() == StatusCode::kNotFound);
  // An existing id is a conflict.
  auto spec = parse_job_spec({{"id", "stop-me"},
                              {"target", {{"twins", {"c-100"}}}},
                              {"action", {{"desired", {{"a", 1}}}}}},
                             Limits{});
  REQUIRE(spec);
  CHECK(j.engine->create(*spec, Cause{}).status().code() == StatusCode::kConflict);
}

TEST_CASE("continuous jobs take twins that come to match later; snapshot jobs do not") {
  Place place;
  JobRig j(place.where);
  j.provision("old", {{"tags", {{"site", "oslo"}}}});
  const json body = {{"target", {{"query", "tags.site = 'oslo'"}}},
                     {"action", {{"desired", {{"mode", "eco"}}}}},
                     {"rate_per_s", 100}};
  json snap = body;
  snap["id"] = "snap";
  json cont = body;
  cont["id"] = "cont";
  cont["mode"] = "continuous";
  j.create(snap);
  j.create(cont);
  j.run_for(200);
  j.provision("new", {{"tags", {{"site", "oslo"}}}});
  j.provision("elsewhere", {{"tags", {{"site", "rome"}}}});
  j.run_for(1500);
  CHECK(j.executions("snap").size() == 1);
  auto cont_exec = j.executions("cont");
  CHECK(cont_exec.size() == 2);
  CHECK(cont_exec["new"].status == ExecStatus::kInProgress);
  // A new twin may match only later, e.g. once tagged.
  j.provision("elsewhere", {{"tags", {{"site", "oslo"}}}});
  j.run_for(1500);
  CHECK(j.executions("cont").size() == 3);
  CHECK(j.twin("elsewhere")["desired"]["mode"] == "eco");
  // Converged everywhere: the snapshot job completes, the continuous one keeps running.
  for (const char* id : {"old", "new", "elsewhere"}) j.report(id, {{"mode", "eco"}});
  j.run_for(200);
  CHECK(j.job("snap")["status"] == "completed");
  CHECK(j.job("cont")["status"] == "running");
  CHECK(count_of(j.job("cont"), "succeeded") == 3);
}

TEST_CASE("command jobs: success, a retry as a new command, failure when retries run out") {
  Place place;
  JobRig j(place.where);
  for (const char* id : {"k-1", "k-2"}) {
    j.provision(id, {});
    j.rig.device(id, InboundKind::kStatus, R"({"state":"online"})");
  }
  j.create({{"id", "reboot"},
            {"target", {{"twins", {"k-1", "k-2"}}}},
            {"action", {{"command", {{"name", "reboot"}, {"args", {{"delay", 1}}}}}}},
            {"retries", 1}});
  j.run_for(100);
  auto answer = [&](const std::string& id, const char* status) {
    json cmds = j.commands(id);
    REQUIRE(!cmds.empty());
    const json& last = cmds.back();
    j.rig.device(id, InboundKind::kCommandResult, json{{"status", status}}.dump(),
                 last["id"].get<std::string>());
    j.rig.store->flush();
    j.round();
  };
  answer("k-1", "succeeded");
  auto exec = j.executions("reboot");
  CHECK(exec["k-1"].status == ExecStatus::kSucceeded);
  CHECK(exec["k-1"].attempts == 1);

  answer("k-2", "failed");
  exec = j.executions("reboot");
  CHECK(exec["k-2"].status == ExecStatus::kInProgress);
  CHECK(exec["k-2"].attempts == 2);
  CHECK(exec["k-2"].detail.find("retry after command failed") == 0);
  json cmds = j.commands("k-2");
  REQUIRE(cmds.size() == 2);
  CHECK(cmds[0]["idempotency_key"] == "job:reboot:1");
  CHECK(cmds[1]["idempotency_key"] == "job:reboot:2");
  CHECK(cmds[1]["name"] == "reboot");
  CHECK(cmds[1]["args"]["delay"] == 1);

  answer("k-2", "rejected");
  exec = j.executions("reboot");
  CHECK(exec["k-2"].status == ExecStatus::kFailed);
  CHECK(exec["k-2"].attempts == 2);
  CHECK(exec["k-2"].detail.find("command rejected") == 0);
  CHECK(j.commands("k-2").size() == 2);
  CHECK(j.job("reboot")["status"] == "completed");
}

TEST_CASE("a deleted twin fails its execution") {
  Place place;
  JobRig j(place.where);
  j.provision("gone", {});
  j.create({{"id", "j"}, {"target", {{"twins", {"gone"}}}}, {"action", {{"desired", {{"x", 1}}}}}});
  j.run_for(100);
  REQUIRE(j.executions("j")["gone"].status == ExecStatus::kInProgress);
  REQUIRE(j.rig.call("gone", DeleteTwin{}).status);
  j.round();
  const auto e = j.executions("j")["gone"];
  CHECK(e.status == ExecStatus::kFailed);
  CHECK(e.detail == "the twin was deleted");
  CHECK(j.job("j")["status"] == "completed");
}

TEST_CASE("after a restart a job resumes: nothing lost, nothing applied twice") {
  Place place;
  const std::string file = place.where;
  {
    JobRig j(file);
    for (int i = 0; i < 30; ++i) {
      j.provision("x-" + std::to_string(100 + i), {});
      j.rig.device("x-" + std::to_string(100 + i), InboundKind::kStatus, R"({"state":"online"})");
    }
    j.create({{"id", "ping"},
              {"target", {{"query", "EXISTS(id)"}}},
              {"action", {{"command", {{"name", "ping"}}}}},
              {"rate_per_s", 10}});
    j.run_for(1000);
    const json job = j.job("ping");
    CHECK(count_of(job, "in_progress") >= 9);
    CHECK(count_of(job, "pending") > 0);
  }
  JobRig j(file);
  CHECK(j.engine->running() == 1);
  j.round();  // the bucket starts empty: nothing is dispatched before time passes
  CHECK(count_of(j.job("ping"), "pending") >= 19);
  j.run_for(3000);
  const json job = j.job("ping");
  CHECK(count_of(job, "pending") == 0);
  CHECK(count_of(job, "in_progress") == 30);
  for (int i = 0; i < 30; ++i) {
    const json cmds = j.commands("x-" + std::to_string(100 + i));
    REQUIRE(cmds.size() == 1);
    CHECK(cmds[0]["idempotency_key"] == "job:ping:1");
  }
}

TEST_CASE("job specifications are validated") {
  const Limits limits;
  auto bad = [&](const json& body) {
    auto spec = parse_job_spec(body, limits);
    CHECK_FALSE(spec);
    return spec ? std::string() : spec.status().message();
  };
  const json target = {{"twins", {"a"}}};
  const json action = {{"desired", {{"x", 1}}}};
  CHECK(bad({{"action", action}}).find("target") != std::string::npos);
  CHECK(bad({{"target", target}}).find("action") != std::string::npos);
  CHECK(bad({{"target", {{"query", "x ="}}}, {"action", action}}).find("target.query") == 0);
  CHECK(
      bad({{"target", target}, {"action", action}, {"mode", "continuous"}}).find("query target") !=
      std::string::npos);
  CHECK(bad({{"target", target}, {"action", action}, {"rate_per_s", 0}}).find("rate_per_s") == 0);
  CHECK(bad({{"target", target}, {"action", action}, {"retries", 2}}).find("command") !=
        std::string::npos);
  CHECK(bad({{"target", target}, {"action", action}, {"id", "a b"}}).find("id") == 0);
  CHECK(bad({{"target", target}, {"action", action}, {"colour", 1}}).find("colour") !=
        std::string::npos);
  CHECK(bad({{"target", target},
             {"action", {{"command", {{"name", "x"}, {"idempotency_key", "k"}}}}}})
            .find("idempotency_key") != std::string::npos);
  auto ok = parse_job_spec({{"target", {{"query", "tags.site = 'x'"}}},
                            {"action", {{"command", {{"name", "reboot"}, {"ttl_s", 60}}}}},
                            {"mode", "continuous"},
                            {"retries", 3},
                            {"abort", {{"failed_pct", 5}, {"min_done", 100}}}},
                           limits);
  REQUIRE_MESSAGE(ok, ok.status().to_string());
  // What is stored reads back as the same specification.
  auto again = parse_job_spec(job_spec_json(*ok), limits);
  REQUIRE(again);
  CHECK(job_spec_json(*again) == job_spec_json(*ok));
  CHECK(job_spec_json(*ok)["abort"]["min_done"] == 100);
}

TEST_CASE("a twin ignores a job it already runs: a repeated dispatch changes nothing") {
  Place place;
  JobRig j(place.where);
  j.provision("d-1", {});
  auto spec = parse_job_spec({{"id", "dup"},
                              {"target", {{"twins", {"d-1"}}}},
                              {"action", {{"desired", {{"mode", "eco"}}}}}},
                             Limits{});
  REQUIRE(spec);
  spec->id = "dup";
  const auto shared = std::make_shared<const JobSpec>(*spec);
  REQUIRE(j.rig.call("d-1", RunJob{shared}).status);
  // An operator's later change, then the same job's action arriving again.
  REQUIRE(j.rig.call("d-1", UpdateDesired{{{"mode", "off"}}, false, std::nullopt}).status);
  REQUIRE(j.rig.call("d-1", RunJob{shared}).status);
  const json t = j.twin("d-1");
  CHECK(t["desired"]["mode"] == "off");
  CHECK(t["desired_version"] == 2);
  // A twin that does not exist is not created by a job.
  CHECK(j.rig.call("nobody", RunJob{shared}).status.code() == StatusCode::kNotFound);
}
