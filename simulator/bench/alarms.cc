// doppel-bench: alarms, N staleness deadlines spread over a window: how late they fire, and
// that none fires early (bench.h).
#include <httplib.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "simulator/bench/bench.h"
#include "simulator/local_broker.h"

namespace doppel::bench {

using doppel::sim::LocalBroker;
namespace fs = std::filesystem;

json Bench::alarms() {
  const uint64_t n = o_.alarm_twins;
  const double after_s = o_.alarm_after_s > 0 ? o_.alarm_after_s : o_.alarm_window_s + 30;
  LocalBroker broker(dir("alarms"));
  if (Status s = broker.start(); !s) return fail(s);
  Gateway gw(o_.doppeld, o_.work_dir + "/alarms/data", broker.uri(),
             gateway_args({"--stale-after-s", fmt(after_s, 3), "--max-hot-twins", "1000",
                           "--hibernate-after-s", "3600"}));
  if (gw.start() < 0) return fail_log("doppeld did not start", gw);
  // Each twin's first report arms its staleness alarm, after_s later: registering the twins
  // evenly over the window spreads the deadlines over the same window.
  LoadOptions arm = load(broker.port(), n, n, 1, "alarm-");
  arm.rate = o_.alarm_window_s > 0 ? static_cast<double>(n) / o_.alarm_window_s : 0;
  LoadGenerator gen(arm);
  if (Status s = gen.connect(); !s) return fail(s);
  const auto t0 = Clock::now();
  gen.start();
  const double registered = wait_for_count("arm", t0, n, [&] {
    return static_cast<uint64_t>(std::max(0.0, gw.metric("doppel_twins")));
  });
  gen.wait();
  gen.stop();
  if (registered < 0) return fail_log("arming stalled", gw);
  const double armed_peak =
      gw.metric("doppel_twins") -
      std::max(0.0, gw.metric("doppel_twin_events_total{event=\"twin.stale\"}"));
  const double fired_t = wait_for_count(
      "fired", t0, n,
      [&] {
        return static_cast<uint64_t>(
            std::max(0.0, gw.metric("doppel_twin_events_total{event=\"twin.stale\"}")));
      },
      after_s + 30);
  const auto m = gw.metrics();
  // Exact lateness from the twins themselves: liveness.since - (last_seen + stale_after).
  std::vector<double> lateness;
  uint64_t early = 0;
  // Sampled evenly across the whole population (ids are in registration, so deadline, order).
  const uint64_t pages = std::max<uint64_t>(1, std::min<uint64_t>(20, n / 1000));
  httplib::Client http("127.0.0.1", gw.port());
  for (uint64_t page_no = 0; page_no < pages; ++page_no) {
    const uint64_t first = page_no * n / pages;
    const std::string cursor = first == 0 ? "" : device_name("alarm-", first - 1);
    auto res = http.Get("/v1/twins?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor));
    if (!res || res->status != 200) break;
    json page = json::parse(res->body);
    for (auto& t : page["items"]) {
      const auto& l = t["liveness"];
      if (l["state"] != "stale" || !l["since"].is_number()) continue;
      const double deadline = l["last_seen"].get<double>() + std::ceil(after_s * 1000 - 1e-9);
      const double late = l["since"].get<double>() - deadline;
      if (late < 0) ++early;
      lateness.push_back(late);
    }
  }
  auto q = [&](double quantile) {
    // Upper bound of the histogram bucket holding the quantile (all N alarms), in ms.
    const double total = m.at("doppel_alarm_lateness_seconds_count");
    for (const char* b :
         {"0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.25", "0.5", "1", "5"}) {
      if (m.at(std::string("doppel_alarm_lateness_seconds_bucket{le=\"") + b + "\"}") >=
          quantile * total) {
        return std::stod(b) * 1000;
      }
    }
    return -1.0;  // beyond the last bucket (5 s)
  };
  json r = {
      {"alarms", n},
      {"after_s", after_s},
      {"window_s", o_.alarm_window_s},
      {"fire_rate_per_s",
       fired_t > 0 ? std::round(static_cast<double>(n) / std::max(0.001, fired_t - after_s)) : 0},
      {"armed_at_peak", armed_peak},
      {"arm_seconds", registered},
      {"fired", m.at("doppel_twin_events_total{event=\"twin.stale\"}")},
      {"all_fired_after_s", fired_t},
      {"lateness_sample_ms", percentiles_ms(lateness)},
      {"early_in_sample", early},
      {"early_total_metric", m.at("doppel_alarms_early_total")},
      {"lateness_max_ms_metric", 1000.0 * m.at("doppel_alarm_lateness_max_seconds")},
      {"lateness_p50_bucket_ms", q(0.5)},
      {"lateness_p99_bucket_ms", q(0.99)},
      {"ok", fired_t > 0 && early == 0}};
  const json& s = r["lateness_sample_ms"];
  print_table("alarms (" + std::to_string(n) + " staleness deadlines, hibernated twins)",
              {{"armed at peak", fmt(armed_peak)},
               {"fired", fmt(r["fired"].get<double>())},
               {"lateness (exact, " + s["count"].dump() + " twins)",
                s.value("count", 0) == 0 ? "n/a"
                                         : "p50 " + s["p50"].dump() + "  p99 " + s["p99"].dump() +
                                               "  max " + s["max"].dump() + " ms"},
               {"lateness (all, histogram bound)",
                "p50 " + bound(r["lateness_p50_bucket_ms"].get<double>()) + ", p99 " +
                    bound(r["lateness_p99_bucket_ms"].get<double>()) + ", max " +
                    fmt(r["lateness_max_ms_metric"].get<double>()) + " ms"},
               {"firing rate", fmt(r["fire_rate_per_s"].get<double>()) + " alarms/s"},
               {"fired early", std::to_string(early) + " (sample), " +
                                   fmt(r["early_total_metric"].get<double>()) + " (metric)"}});
  return r;
}

}  // namespace doppel::bench
