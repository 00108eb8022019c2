#include "simulator/bench/console.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "simulator/bench/load.h"
#include "simulator/local_broker.h"

namespace doppel::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The last line of a file that parses as a JSON object, or null.
json last_json_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  json found;
  while (std::getline(in, line)) {
    if (line.empty() || line.front() != '{') continue;
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded()) found = std::move(j);
  }
  return found;
}

}  // namespace

json run_console_bench(const ConsoleBenchOptions& o) {
  sim::LocalBroker broker(o.work_dir);
  if (Status s = broker.start(); !s) return {{"ok", false}, {"error", s.to_string()}};
  Gateway gw(o.doppeld, o.work_dir + "/data", broker.uri(), o.gateway_args);
  if (gw.start() < 0) return {{"ok", false}, {"error", "doppeld did not start:\n" + gw.log()}};
  json r = {{"twins", o.twins}};
  const auto t0 = Clock::now();
  if (auto e = register_fleet(broker.port(), gw, o.twins, o.connections, "c-"); !e.empty()) {
    return {{"ok", false}, {"error", e}};
  }
  r["register_seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();

  // The twins on screen: reports to live_twins devices at live_rate, each one changing a value
  // (a sequence number), so every report is an event the page shows.
  LoadOptions l;
  l.port = broker.port();
  l.connections = 1;
  l.devices = static_cast<uint64_t>(o.live_twins);
  l.id_prefix = "live-";
  l.rate = o.live_rate;
  // Long enough for the page loads, the live page and its measuring window.
  l.messages = static_cast<uint64_t>(o.live_rate * (o.live_seconds + 30.0 + 5.0 * o.loads));
  LoadGenerator reports(l);
  if (Status s = reports.connect(); !s) return {{"ok", false}, {"error", s.to_string()}};
  reports.start();
  const std::string out = o.work_dir + "/measure.json";
  const std::string cmd = "node " + o.script +
                          " --url http://127.0.0.1:" + std::to_string(gw.port()) +
                          " --live-seconds " + std::to_string(o.live_seconds) + " --loads " +
                          std::to_string(o.loads) + " > " + out;
  // The live twins exist once their first reports are committed.
  for (int i = 0; i < 100 && gw.metric("doppel_twins") < static_cast<double>(o.twins + l.devices);
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const int rc = std::system(cmd.c_str());
  reports.stop();
  gw.stop();
  json m = last_json_line(out);
  if (rc != 0 || !m.is_object()) {
    return {{"ok", false},
            {"error", "measure.mjs failed (exit " + std::to_string(rc) + "): " + cmd}};
  }
  r["browser"] = m;
  r["ok"] = m.value("ok", false);
  auto ms = [&](const json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? fmt(j[k].get<double>(), 0) + " ms" : "-";
  };
  const json& live = m.value("report_to_dom", json::object());
  print_table(
      "console (" + fmt(static_cast<double>(o.twins)) + " twins)",
      {{"register the fleet", fmt(r["register_seconds"].get<double>(), 1) + " s"},
       {"open -> first table, first / median of " + std::to_string(o.loads) + " (target <= 1 s)",
        ms(m.value("first_table_ms", json::object()), "first") + " / " +
            ms(m.value("first_table_ms", json::object()), "median")},
       {"open -> counts, first / median",
        ms(m.value("first_counts_ms", json::object()), "first") + " / " +
            ms(m.value("first_counts_ms", json::object()), "median")},
       {"first load, console bytes on the wire (target <= 300 KB)",
        fmt(m.value("first_load_console_bytes", 0.0) / 1024, 1) + " KiB"},
       {"report -> DOM, " + std::to_string(o.live_twins) + " twins at " + fmt(o.live_rate) +
            " reports/s (target p99 <= 250 ms)",
        "p50 " + ms(live, "p50_ms") + ", p99 " + ms(live, "p99_ms") + " over " +
            fmt(live.value("updates", 0.0)) + " updates"}});
  return r;
}

}  // namespace doppel::bench
