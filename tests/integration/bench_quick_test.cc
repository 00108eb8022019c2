// doppel-bench --quick keeps the measurement harness working: every scenario runs at tiny sizes
// and its counts add up (nothing lost, nothing early). No timing is asserted.
#include <doctest/doctest.h>

#include <fstream>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("doppel-bench --quick measures every scenario and its counts add up") {
  TempDir dir;
  const std::string out = dir.file("bench.json");
  Process bench({DOPPEL_BENCH_PATH, "--quick", "--out", out, "--work-dir", dir.file("work")},
                dir.file("bench.log"));
  int status = -1;
  // On a hang, its log says which scenario (and which step) it was in.
  REQUIRE_MESSAGE(bench.wait_exit(330s, &status), "doppel-bench --quick did not finish; its log:\n",
                  bench.log());
  CHECK_MESSAGE(WEXITSTATUS(status) == 0, bench.log());
  std::ifstream in(out);
  REQUIRE(in);
  const json r = json::parse(in);
  const json& s = r["scenarios"];
  for (const std::string name : {"ceiling", "ingest", "baseline", "latency", "memory", "alarms",
                                 "restart", "api", "feed", "query", "jobs"}) {
    CAPTURE(name);  // a std::string: doctest prints a const char* as its address
    REQUIRE(s.contains(name));
    CHECK(s[name]["ok"] == true);
  }
  for (const char* qos : {"qos0", "qos1"}) {
    CHECK(s["ceiling"][qos]["received"] == s["ceiling"][qos]["messages"]);
    CHECK(s["ceiling"][qos]["msgs_per_s"].get<double>() > 0);
  }
  CHECK(s["ceiling"]["qos1"]["lost"] == 0);
  CHECK(s["ingest"]["processed"] == s["ingest"]["messages"]);
  CHECK(s["ingest"]["committed_writes"].get<double>() >= s["ingest"]["messages"].get<double>());
  CHECK(s["ingest"]["rejected"] == 0);
  CHECK(s["ingest"].contains("ratio_to_ceiling_qos1"));
  CHECK(s["baseline"]["processed"] == s["baseline"]["messages"]);
  CHECK(s["baseline"]["failed"] == 0);
  CHECK(s["baseline"].contains("doppeld_speedup"));
  CHECK(s["latency"]["desired_to_device_ms"]["count"] == s["latency"]["patches"]);
  CHECK(s["latency"]["command_to_device_ms"]["count"] == s["latency"]["patches"]);
  CHECK(s["memory"]["hot_in_memory"] == s["memory"]["hot"]);
  CHECK(s["memory"]["hot_after_registration"].get<double>() <= 1000);
  CHECK(s["alarms"]["fired"] == s["alarms"]["alarms"]);
  CHECK(s["alarms"]["early_in_sample"] == 0);
  CHECK(s["alarms"]["early_total_metric"] == 0);
  CHECK(s["alarms"]["lateness_sample_ms"]["count"] == s["alarms"]["alarms"]);
  CHECK(s["restart"]["overdue_fired_after_start_s"].get<double>() > 0);
  // api: every level measured, the idle connections all answered once, the streams and the HTTPS
  // run delivered something, and no stream reader at its own pace was cut off.
  for (const auto& level : s["api"]["levels"]) {
    CHECK(level["get"]["rps"].get<double>() > 0);
    CHECK(level["patch_writes_committed"].get<double>() >=
          level["patch"]["requests"].get<double>() - level["patch"]["non2xx"].get<double>());
  }
  CHECK(s["api"]["idle_connections"].get<double>() > 0);
  // feed: as-of reads all answered; query: every figure measured, index costs measured.
  CHECK(s["feed"]["as_of_failed"] == 0);
  CHECK(s["feed"]["as_of_time"]["count"].get<double>() > 0);
  CHECK(s["query"]["indexed_first_page"]["count"].get<double>() > 0);
  CHECK(s["query"]["count_by_liveness"]["count"] == s["query"]["twins"]);
  CHECK(s["query"]["store_us_per_write_3_indexes"].get<double>() > 0);
  CHECK(s["api"]["streams"]["events_per_s"].get<double>() > 0);
  CHECK(s["api"]["streams"]["cut_off"] == 0);
  CHECK(s["api"]["https"]["get"]["rps"].get<double>() > 0);
  // jobs: every twin converged through the job, every probe PATCH's delta arrived.
  CHECK(s["jobs"]["counts"]["succeeded"] == s["jobs"]["twins"]);
  CHECK(s["jobs"]["deltas_answered"].get<double>() >= s["jobs"]["twins"].get<double>());
  CHECK(s["jobs"]["patch_to_delta_during_job_ms"]["missing"] == 0);
  CHECK(s["jobs"]["patch_to_delta_during_job_ms"]["count"].get<double>() > 0);
  // feed: both phases delivered events to their subscribers.
  CHECK(s["feed"]["unfiltered"]["count"].get<double>() > 0);
  CHECK(s["feed"]["filtered"]["count"].get<double>() > 0);
  // cluster: one and two nodes measured, PATCHes answered, a job rolled out over every twin, the
  // kill's twin served again.
  for (const char* nodes : {"1", "2"}) {
    CHECK(s["cluster"]["runs"][nodes]["ingest_updates_per_s"].get<double>() > 0);
    CHECK(s["cluster"]["runs"][nodes]["api"]["patches_per_s"].get<double>() > 0);
    const auto& rollout = s["cluster"]["runs"][nodes]["rollout"];
    CHECK_MESSAGE(rollout["ok"] == true, rollout.dump());
    CHECK(rollout["executions_per_s"].get<double>() > 0);
  }
  CHECK(s["cluster"]["takeover_ms"]["count"] == 1);
  // aws: both dialects' ingest committed every update (ingest_run checks the count).
  CHECK(s["aws"]["ok"] == true);
  CHECK(s["aws"]["aws_updates_per_s"].get<double>() > 0);
  CHECK(s["aws"]["aws_documents_updates_per_s"].get<double>() > 0);
}
