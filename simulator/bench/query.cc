#include "simulator/bench/query.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "simulator/bench/load.h"
#include "simulator/local_broker.h"
#include "simulator/url.h"

namespace doppel::bench {
namespace {

using Clock = std::chrono::steady_clock;

// `n` sequential GETs of `path`: latency percentiles, and what the last one answered.
json timed(httplib::Client& http, const std::string& path, int n, json* last = nullptr) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    auto res = http.Get(path);
    const double t = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!res || res->status != 200) {
      return {{"ok", false},
              {"error", path + ": " +
                            (res ? std::to_string(res->status) + " " + res->body
                                 : std::string("no answer"))}};
    }
    ms.push_back(t);
    if (last != nullptr && i + 1 == n) *last = json::parse(res->body, nullptr, false);
  }
  json r = percentiles_ms(ms);
  r["ok"] = true;
  return r;
}

// Sends `updates` reports to the registered twins (each changes battery) and returns the store's
// time per committed write over them, in microseconds.
double store_us_per_write(Gateway& gw, int port, const QueryBenchOptions& o, uint64_t first_n) {
  const double secs0 = gw.metric("doppel_store_commit_seconds_sum");
  const double writes0 = gw.metric("doppel_store_writes_total");
  LoadOptions l;
  l.port = port;
  l.connections = o.connections;
  l.devices = o.twins;
  l.messages = o.updates;
  l.first_device = first_n % o.twins;
  l.id_prefix = "q-";
  LoadGenerator gen(l);
  if (!gen.connect()) return -1;
  gen.start();
  gen.wait();
  gen.stop();
  const double target = writes0 + static_cast<double>(o.updates);
  for (int i = 0; i < 600 && gw.metric("doppel_store_writes_total") < target; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double writes = gw.metric("doppel_store_writes_total") - writes0;
  if (writes <= 0) return -1;
  return (gw.metric("doppel_store_commit_seconds_sum") - secs0) * 1e6 / writes;
}

}  // namespace

json run_query_bench(const QueryBenchOptions& o) {
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  const std::string data = o.work_dir + "/data";
  std::vector<std::string> args = o.gateway_args;
  for (const char* a : {"--max-hot-twins", "1000", "--index", "reported.battery"}) {
    args.emplace_back(a);
  }
  json r = {{"twins", o.twins}};
  {
    Gateway gw(o.doppeld, data, broker.uri(), args);
    if (gw.start() < 0) return {{"ok", false}, {"error", "doppeld did not start:\n" + gw.log()}};
    // Register the fleet: device i reports battery 100 - i % 100 (1% of the fleet each).
    const auto t0 = Clock::now();
    if (auto e = register_fleet(broker.port(), gw, o.twins, o.connections, "q-"); !e.empty()) {
      return {{"ok", false}, {"error", e}};
    }
    r["register_seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();

    httplib::Client http("127.0.0.1", gw.port());
    http.set_read_timeout(std::chrono::seconds(120));
    json page;
    r["indexed_first_page"] =
        timed(http, "/v1/twins?limit=100&q=" + sim::percent_encode("reported.battery = 42"),
              o.page_reads, &page);
    r["indexed_first_page"]["items"] = page.is_object() ? page["items"].size() : 0;
    r["state_first_page"] =
        timed(http, "/v1/twins?limit=100&q=" + sim::percent_encode("liveness.state = 'fresh'"),
              o.page_reads);
    json counted;
    r["count_by_liveness"] =
        timed(http, "/v1/fleet/count?group_by=liveness.state", o.count_reads, &counted);
    r["count_by_liveness"]["count"] = counted.is_object() ? counted.value("count", 0) : 0;
    r["full_scan_count"] =
        timed(http, "/v1/fleet/count?q=" + sim::percent_encode("reported.temperature > 25.5"),
              o.count_reads, &counted);
    r["full_scan_count"]["count"] = counted.is_object() ? counted.value("count", 0) : 0;
    // The last twin in id order, found by a field no index has: the page scans everything.
    r["full_scan_page"] =
        timed(http,
              "/v1/twins?limit=10&q=" +
                  sim::percent_encode("reported.seq = " + std::to_string(o.twins - 1)),
              o.count_reads, &page);
    r["full_scan_page"]["items"] = page.is_object() ? page["items"].size() : 0;
    for (const char* k : {"indexed_first_page", "state_first_page", "count_by_liveness",
                          "full_scan_count", "full_scan_page"}) {
      std::printf("  %-20s p50 %8.2f ms  p99 %8.2f ms\n", k, r[k].value("p50", 0.0),
                  r[k].value("p99", 0.0));
    }
    std::fflush(stdout);
    r["store_us_per_write_1_index"] = store_us_per_write(gw, broker.port(), o, 1);
    gw.stop();
  }
  {
    // Two more expression indexes: created over the whole fleet at start, then kept current.
    std::vector<std::string> more = args;
    for (const char* a : {"--index", "reported.temperature", "--index", "reported.seq"}) {
      more.emplace_back(a);
    }
    Gateway gw(o.doppeld, data, broker.uri(), more);
    const double started = gw.start(std::chrono::seconds(600));
    if (started < 0) return {{"ok", false}, {"error", "doppeld did not restart:\n" + gw.log()}};
    r["start_seconds_creating_2_indexes"] = started;
    r["store_us_per_write_3_indexes"] = store_us_per_write(gw, broker.port(), o, 7);
    gw.stop();
  }
  const double one = r["store_us_per_write_1_index"].get<double>();
  const double three = r["store_us_per_write_3_indexes"].get<double>();
  r["store_us_per_write_per_index"] = (three - one) / 2;
  bool ok = one > 0 && three > 0;
  for (const char* k : {"indexed_first_page", "state_first_page", "count_by_liveness",
                        "full_scan_count", "full_scan_page"}) {
    ok = ok && r[k].value("ok", false);
  }
  // battery = 42 is every device i with i % 100 == 58.
  const uint64_t with_42 = o.twins / 100 + (o.twins % 100 > 58 ? 1 : 0);
  ok = ok && r["indexed_first_page"]["items"] == std::min<uint64_t>(100, with_42) &&
       r["full_scan_page"]["items"] == 1 && r["count_by_liveness"]["count"] == o.twins;
  r["ok"] = ok;

  auto fig = [&](const char* k) {
    return "p50 " + fmt(r[k].value("p50", 0.0), 2) + " ms, p99 " + fmt(r[k].value("p99", 0.0), 2) +
           " ms";
  };
  print_table("query (" + fmt(static_cast<double>(o.twins)) + " twins)",
              {{"register the fleet", fmt(r["register_seconds"].get<double>(), 1) + " s"},
               {"indexed equality, first page (target p99 <= 20 ms)", fig("indexed_first_page")},
               {"liveness.state = 'fresh', first page", fig("state_first_page")},
               {"count group_by liveness.state (target <= 200 ms)", fig("count_by_liveness")},
               {"unindexed full scan, count (target <= 2 s)", fig("full_scan_count")},
               {"unindexed full scan, page", fig("full_scan_page")},
               {"store time per write, 1 / 3 expression indexes",
                fmt(one, 1) + " / " + fmt(three, 1) + " us (" +
                    fmt(r["store_us_per_write_per_index"].get<double>(), 1) + " us per index)"},
               {"start, creating 2 indexes over the fleet",
                fmt(r["start_seconds_creating_2_indexes"].get<double>(), 1) + " s"}});
  return r;
}

}  // namespace doppel::bench
