// doppel-bench: overload, the rate doppeld sustains and how long a burst above it lasts before
// the broker's queue overflows (bench.h).
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

json Bench::overload() {
  const uint64_t q = o_.overload_queue;
  LocalBroker broker(dir("overload"),
                     {"max_queued_messages " + std::to_string(q), "sys_interval 1"});
  if (Status s = broker.start(); !s) return fail(s);
  Gateway gw(o_.doppeld, o_.work_dir + "/overload/data", broker.uri(), gateway_args({}));
  if (gw.start() < 0) return fail_log("doppeld did not start", gw);
  const std::string in_key = "doppel_mqtt_messages_in_total{kind=\"reported\"}";
  auto received = [&] { return static_cast<uint64_t>(std::max(0.0, gw.metric(in_key))); };

  // 1. Sustained: a load that fits the broker's queue, published as fast as possible; doppeld
  //    drains it at its own pace, which is the rate it sustains.
  const uint64_t fit = q * 8 / 10;
  double drain_rate = 0;
  {
    LoadGenerator gen(load(broker.port(), fit, o_.devices, 1));
    if (Status s = gen.connect(); !s) return fail(s);
    const auto t0 = Clock::now();
    gen.start();
    const double t = wait_for_count("sustained", t0, fit, received);
    gen.wait();
    gen.stop();
    if (t < 0) return fail_log("draining the sustained load stalled", gw);
    drain_rate = static_cast<double>(fit) / t;
  }
  // 2. A burst of five queues' worth as fast as the publishers go: the queue grows at
  //    (publish rate - drain rate) until it is full, then the broker drops.
  const uint64_t burst = q * 5;
  const uint64_t before = received();
  const double dropped0 = std::max(0.0, gw.metric("doppel_broker_dropped_messages_total"));
  LoadGenerator gen(load(broker.port(), burst, o_.devices, 1));
  if (Status s = gen.connect(); !s) return fail(s);
  const auto t0 = Clock::now();
  gen.start();
  double first_drop_s = -1;
  bool degraded_seen = false;
  httplib::Client http("127.0.0.1", gw.port());
  std::atomic<bool> finished{false};
  std::thread watcher([&] {
    while (!finished.load() && !g_interrupted) {
      if (first_drop_s < 0 && gw.metric("doppel_broker_dropped_messages_total") > dropped0) {
        first_drop_s = seconds_since(t0);
      }
      if (auto r = http.Get("/readyz"); r && r->body.find("degraded") != std::string::npos) {
        degraded_seen = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  gen.wait();
  const double publish_s = seconds_since(t0);
  finished.store(true);
  watcher.join();
  gen.stop();
  // The broker reports its drop counter every second: wait for two reports, then for doppeld
  // to drain what was queued. Every message is either received by doppeld or counted dropped.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const auto dropped = static_cast<uint64_t>(
      std::max(0.0, gw.metric("doppel_broker_dropped_messages_total") - dropped0));
  const uint64_t expected = burst - std::min(burst, dropped);
  const double drained =
      wait_for_count("burst received", t0, expected, [&] { return received() - before; });
  const uint64_t got = received() - before;
  if (first_drop_s < 0 && dropped > 0) first_drop_s = publish_s;
  const double publish_rate = static_cast<double>(burst) / publish_s;
  const double excess = publish_rate - drain_rate;
  // Observed: the queue filled in first_drop_s, so it grew at q / first_drop_s per second; the
  // gateway drained the rest. Under a burst the broker takes CPU from doppeld (two cores for
  // three busy processes), so this drain is below the sustained one.
  const double growth = first_drop_s > 0 ? static_cast<double>(q) / first_drop_s : 0;
  json r = {{"broker_queue", q},
            {"sustained_per_s", std::round(drain_rate)},
            {"burst_messages", burst},
            {"burst_publish_per_s", std::round(publish_rate)},
            {"burst_dropped", dropped},
            {"burst_received", got},
            {"first_drop_after_s", first_drop_s},
            {"predicted_first_drop_s",  // from the sustained rate alone
             excess > 0 ? std::round(static_cast<double>(q) / excess * 100) / 100 : -1},
            {"queue_growth_per_s", std::round(growth)},
            {"drain_during_burst_per_s", growth > 0 ? std::round(publish_rate - growth) : -1},
            {"embedded_queue_burst_s",  // how long this burst lasts with a 1,000,000 queue
             growth > 0 ? std::round(1e6 / growth * 10) / 10 : -1},
            {"readyz_degraded_seen", degraded_seen},
            {"ok", drained > 0 && got + dropped == burst && (dropped == 0 || degraded_seen)}};
  if (!r["ok"].get<bool>()) {
    std::printf(
        "  FAILED: counts do not add up (received %llu + dropped %llu != sent %llu) or "
        "/readyz never said degraded\n",
        static_cast<unsigned long long>(got), static_cast<unsigned long long>(dropped),
        static_cast<unsigned long long>(burst));
  }
  print_table(
      "overload (broker queue " + std::to_string(q) + " messages)",
      {{"sustained (doppeld drains)", fmt(drain_rate) + " updates/s"},
       {"burst published", fmt(publish_rate) + " msg/s for " + fmt(publish_s, 1) + " s"},
       {"first drop after", fmt(first_drop_s, 2) + " s (" + r["predicted_first_drop_s"].dump() +
                                " s from the sustained rate alone)"},
       {"queue growth / drain in the burst",
        r["queue_growth_per_s"].dump() + " / " + r["drain_during_burst_per_s"].dump() + " msg/s"},
       {"dropped / received", std::to_string(dropped) + " / " + std::to_string(got)},
       {"burst headroom, 1M queue", r["embedded_queue_burst_s"].dump() + " s"}});
  return r;
}

}  // namespace doppel::bench
