// doppel-bench: memory (RSS per hibernated and per hot twin) and restart (start -> /readyz with
// the twins stored, overdue alarms at start-up) (bench.h).
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

double Bench::ready_ms(const json& seconds) { return seconds.get<double>() * 1000; }

std::string Bench::bound(double ms) { return ms < 0 ? "> 5000 ms" : "<= " + fmt(ms) + " ms"; }

json Bench::memory() {
  const uint64_t n = o_.memory_twins;
  const uint64_t k = std::min(o_.hot_twins, n);
  LocalBroker broker(dir("memory"));
  if (Status s = broker.start(); !s) return fail(s);
  const std::string data = o_.work_dir + "/memory/data";
  json r = {{"registered", n}, {"hot", k}};
  {
    // Register N twins with at most 1000 in memory: the rest hibernate at once.
    Gateway gw(o_.doppeld, data, broker.uri(),
               gateway_args({"--max-hot-twins", "1000", "--hibernate-after-s", "3600"}));
    if (gw.start() < 0) return fail_log("doppeld did not start", gw);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const long rss0 = rss_kib(gw.pid());
    const double sqlite0 = gw.metric("doppel_store_sqlite_memory_bytes");
    LoadGenerator gen(load(broker.port(), n, n, 1, "mem-"));
    if (Status s = gen.connect(); !s) return fail(s);
    const auto t0 = Clock::now();
    gen.start();
    const double t = wait_for_count("register", t0, n, [&] {
      return static_cast<uint64_t>(std::max(0.0, gw.metric("doppel_twins")));
    });
    gen.wait();
    gen.stop();
    if (t < 0) return fail_log("registration stalled", gw);
    std::this_thread::sleep_for(std::chrono::seconds(2));  // sweeps and malloc trims
    const long rss1 = rss_kib(gw.pid());
    const double sqlite1 = gw.metric("doppel_store_sqlite_memory_bytes");
    r["register_seconds"] = t;
    r["rss_empty_kib"] = rss0;
    r["rss_registered_kib"] = rss1;
    r["sqlite_cache_growth_kib"] = std::round((sqlite1 - sqlite0) / 1024);
    r["bytes_per_registered_twin"] = std::round(static_cast<double>(rss1 - rss0) * 1024 / n);
    r["bytes_per_registered_twin_excluding_sqlite_cache"] =
        std::round((static_cast<double>(rss1 - rss0) * 1024 - (sqlite1 - sqlite0)) / n);
    r["hot_after_registration"] = gw.metric("doppel_twins_hot");
    gw.stop();
  }
  std::error_code ec;
  r["database_bytes_per_twin"] =
      std::round(static_cast<double>(fs::file_size(data + "/doppel.db", ec)) / n);
  {
    // Touch K of them with room for all in memory.
    Gateway gw(
        o_.doppeld, data, broker.uri(),
        gateway_args({"--max-hot-twins", std::to_string(k * 2), "--hibernate-after-s", "3600"}));
    const double ready = gw.start();
    if (ready < 0) return fail_log("doppeld did not restart", gw);
    r["restart_ready_seconds"] = ready;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const long rss0 = rss_kib(gw.pid());
    const double sqlite0 = gw.metric("doppel_store_sqlite_memory_bytes");
    const double writes0 = std::max(0.0, gw.metric("doppel_store_writes_total"));
    LoadGenerator gen(load(broker.port(), k, k, 1, "mem-"));
    if (Status s = gen.connect(); !s) return fail(s);
    const auto t0 = Clock::now();
    gen.start();
    const double touched = wait_for_count("touch", t0, k, [&] {
      return static_cast<uint64_t>(std::max(0.0, gw.metric("doppel_store_writes_total") - writes0));
    });
    gen.wait();
    gen.stop();
    if (touched < 0) return fail_log("touching the hot twins stalled", gw);
    const long rss1 = rss_kib(gw.pid());
    const double sqlite_growth = gw.metric("doppel_store_sqlite_memory_bytes") - sqlite0;
    // What the twin's state alone costs in memory, measured here with the same documents.
    httplib::Client http("127.0.0.1", gw.port());
    auto doc = http.Get("/v1/twins/" + device_name("mem-", 0));
    const json sample = doc && doc->status == 200 ? json::parse(doc->body) : json::object();
    const long self0 = rss_kib(::getpid());
    std::vector<json> copies;
    copies.reserve(k);
    for (uint64_t i = 0; i < k; ++i) {
      copies.push_back(
          {sample.value("desired", json::object()), sample.value("reported", json::object()),
           sample["metadata"].value("desired", json::object()),
           compact_reported_meta(sample["metadata"].value("reported", json::object()))});
    }
    const long self1 = rss_kib(::getpid());
    const double per_hot = static_cast<double>(rss1 - rss0) * 1024 / static_cast<double>(k);
    const double state = static_cast<double>(self1 - self0) * 1024 / static_cast<double>(k);
    r["hot_in_memory"] = gw.metric("doppel_twins_hot");
    r["bytes_per_hot_twin"] = std::round(per_hot);
    r["state_bytes_per_twin_in_memory"] = std::round(state);
    r["bytes_per_hot_twin_beyond_state"] = std::round(per_hot - state);
    r["sqlite_cache_growth_kib_touching"] = std::round(sqlite_growth / 1024);
    r["bytes_per_hot_twin_beyond_state_excluding_sqlite_cache"] =
        std::round(per_hot - state - sqlite_growth / static_cast<double>(k));
    r["state_json_bytes"] =
        sample.value("reported", json::object()).dump().size() + sample["metadata"].dump().size();
    r["projected_rss_1m_registered_mib"] =
        std::round((static_cast<double>(r["rss_empty_kib"].get<long>()) * 1024 +
                    1e6 * r["bytes_per_registered_twin"].get<double>()) /
                   (1 << 20));
    gw.stop();
  }
  r["ok"] = true;
  print_table(
      "memory (doppeld RSS)",
      {{"twins registered", std::to_string(n)},
       {"per registered (hibernated) twin",
        fmt(r["bytes_per_registered_twin"].get<double>()) + " B"},
       {"  excluding SQLite's page caches",
        fmt(r["bytes_per_registered_twin_excluding_sqlite_cache"].get<double>()) +
            " B (caches grew " + fmt(r["sqlite_cache_growth_kib"].get<double>()) + " KiB)"},
       {"per hot twin", fmt(r["bytes_per_hot_twin"].get<double>()) + " B"},
       {"  of which the state documents",
        fmt(r["state_bytes_per_twin_in_memory"].get<double>()) + " B"},
       {"  beyond the state", fmt(r["bytes_per_hot_twin_beyond_state"].get<double>()) + " B"},
       {"  beyond the state, excl. SQLite caches",
        fmt(r["bytes_per_hot_twin_beyond_state_excluding_sqlite_cache"].get<double>()) + " B"},
       {"projected RSS, 1M registered",
        fmt(r["projected_rss_1m_registered_mib"].get<double>()) + " MiB"},
       {"SQLite file per twin", fmt(r["database_bytes_per_twin"].get<double>()) + " B"},
       {"restart with all registered",
        fmt(ready_ms(r["restart_ready_seconds"]), 0) + " ms to /readyz"}});
  memory_data_ = data;
  memory_broker_dir_ = o_.work_dir + "/memory";
  return r;
}

json Bench::restart() {
  std::string data = memory_data_;
  std::string broker_dir = memory_broker_dir_;
  if (data.empty()) {  // without the memory scenario: store a smaller population here
    broker_dir = dir("restart");
    data = broker_dir + "/data";
  }
  LocalBroker broker(broker_dir);
  if (Status s = broker.start(); !s) return fail(s);
  json r;
  Gateway gw(o_.doppeld, data, broker.uri(), gateway_args({"--hibernate-after-s", "3600"}));
  if (gw.start() < 0) return fail_log("doppeld did not start", gw);
  if (memory_data_.empty()) {
    LoadGenerator gen(load(broker.port(), o_.memory_twins, o_.memory_twins, 1, "mem-"));
    if (Status s = gen.connect(); !s) return fail(s);
    const auto t0 = Clock::now();
    gen.start();
    const double t = wait_for_count("register", t0, o_.memory_twins, [&] {
      return static_cast<uint64_t>(std::max(0.0, gw.metric("doppel_twins")));
    });
    gen.wait();
    gen.stop();
    if (t < 0) return fail_log("registration stalled", gw);
  }
  const double registered = gw.metric("doppel_twins");
  // Twins whose alarms will fall due while the gateway is down (and not before it stops: the
  // window is longer than provisioning them all takes, so none goes stale early and is not due
  // again after the restart).
  const double stale_after_s = o_.quick ? 2 : 10;
  const auto provisioning = Clock::now();
  {
    std::vector<std::thread> putters;
    for (uint64_t t = 0; t < 8; ++t) {
      putters.emplace_back([&, t] {
        httplib::Client http("127.0.0.1", gw.port());
        for (uint64_t i = t; i < o_.restart_overdue; i += 8) {
          http.Put("/v1/twins/overdue-" + std::to_string(i),
                   "{\"stale_after_s\":" + fmt(stale_after_s) + "}", "application/json");
        }
      });
    }
    for (auto& p : putters) p.join();
  }
  const auto last_provisioned = Clock::now();
  if (last_provisioned - provisioning > std::chrono::duration<double>(stale_after_s)) {
    return fail(Status(StatusCode::kUnavailable,
                       "provisioning " + std::to_string(o_.restart_overdue) +
                           " overdue twins took longer than their staleness window"));
  }
  const double twins = gw.metric("doppel_twins");
  gw.stop();
  // A stall is a failure: every twin registered and provisioned here must be stored.
  if (twins != registered + static_cast<double>(o_.restart_overdue)) {
    return fail_log("counts do not add up: " + fmt(twins) + " twins stored, expected " +
                        fmt(registered + static_cast<double>(o_.restart_overdue)),
                    gw);
  }
  // Down until every one of them is overdue.
  std::this_thread::sleep_until(last_provisioned + std::chrono::duration<double>(stale_after_s) +
                                std::chrono::milliseconds(500));
  const auto t0 = Clock::now();
  const double ready = gw.start();
  if (ready < 0) return fail_log("doppeld did not restart", gw);
  const double fired = wait_for_count(
      "overdue alarms", t0, o_.restart_overdue,
      [&] {
        return static_cast<uint64_t>(
            std::max(0.0, gw.metric("doppel_twin_events_total{event=\"twin.stale\"}")));
      },
      10);
  r = {{"twins", twins},
       {"ready_seconds", ready},
       {"overdue_alarms", o_.restart_overdue},
       {"overdue_fired_after_start_s", fired},
       {"ok", ready > 0 && fired > 0 && twins >= static_cast<double>(o_.restart_overdue)}};
  print_table("restart", {{"twins stored", fmt(twins)},
                          {"start -> /readyz", fmt(ready * 1000) + " ms"},
                          {std::to_string(o_.restart_overdue) + " overdue alarms fired",
                           fmt(fired * 1000) + " ms after start"}});
  return r;
}

}  // namespace doppel::bench
