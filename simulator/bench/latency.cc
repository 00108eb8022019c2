// doppel-bench: latency, PATCH -> delta at the device and command delivery while devices report
// in the background (bench.h).
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

json Bench::latency() {
  LocalBroker broker(dir("latency"));
  if (Status s = broker.start(); !s) return fail(s);
  Gateway gw(o_.doppeld, o_.work_dir + "/latency/data", broker.uri(), gateway_args({}));
  if (gw.start() < 0) return fail_log("doppeld did not start", gw);

  constexpr int kDevices = 10;
  const auto patches = static_cast<uint64_t>(o_.patch_rate * o_.latency_seconds);
  std::vector<std::atomic<int64_t>> sent(patches);
  std::vector<std::atomic<int64_t>> sent_cmd(patches);
  std::mutex mu;
  std::vector<double> delta_ms;
  std::vector<double> command_ms;
  std::vector<double> http_ms;
  auto ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  };
  std::vector<std::unique_ptr<doppel::mqtt::Client>> devices;
  for (int i = 0; i < kDevices; ++i) {
    doppel::mqtt::ClientOptions o;
    o.uri = broker.uri();
    o.client_id = "lat-" + std::to_string(i);
    auto c = std::make_unique<doppel::mqtt::Client>(o);
    doppel::mqtt::Client* raw = c.get();
    c->on_message([&, raw](doppel::mqtt::IncomingMessage&& m) {
      const int64_t now = ns();
      json j = json::parse(m.payload, nullptr, false);
      if (m.topic.find("/delta") != std::string::npos) {
        const auto seq = j["state"].value("seq", uint64_t{0});
        if (seq < patches && sent[seq].load() > 0) {
          std::lock_guard lock(mu);
          delta_ms.push_back(static_cast<double>(now - sent[seq].load()) / 1e6);
        }
      } else if (m.topic.find("/commands/") != std::string::npos) {
        const auto k = j["args"].value("k", uint64_t{0});
        if (k < patches && sent_cmd[k].load() > 0) {
          std::lock_guard lock(mu);
          command_ms.push_back(static_cast<double>(now - sent_cmd[k].load()) / 1e6);
        }
        (void)raw->publish(m.topic + "/result", R"({"status":"succeeded"})", 1);
      }
    });
    if (Status s = c->connect(std::chrono::seconds(10)); !s) return fail(s);
    const std::string base = "twins/lat-" + std::to_string(i);
    (void)c->subscribe({base + "/delta", base + "/commands/+"}, 1);
    (void)c->publish(base + "/status", R"({"state":"online"})", 1);
    devices.push_back(std::move(c));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  // Background ingest for the whole measurement.
  LoadOptions bg =
      load(broker.port(), static_cast<uint64_t>(o_.background_rate * (o_.latency_seconds * 2 + 10)),
           o_.devices, 1);
  bg.rate = o_.background_rate;
  LoadGenerator gen(bg);
  if (Status s = gen.connect(); !s) return fail(s);
  gen.start();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // let it settle
  const double bg_before = gw.metric("doppel_store_writes_total");
  const auto bg_t0 = Clock::now();

  // Operators: PATCHes at a fixed rate, then commands at the same rate.
  auto drive = [&](bool commands, std::vector<std::atomic<int64_t>>& stamps) {
    constexpr int kSenders = 4;
    std::vector<std::thread> senders;
    const auto start = Clock::now() + std::chrono::milliseconds(50);
    for (int w = 0; w < kSenders; ++w) {
      senders.emplace_back([&, w] {
        httplib::Client http("127.0.0.1", gw.port());
        http.set_keep_alive(true);
        http.set_tcp_nodelay(true);
        for (uint64_t k = static_cast<uint64_t>(w); k < patches && !g_interrupted; k += kSenders) {
          std::this_thread::sleep_until(
              start + std::chrono::duration_cast<Clock::duration>(
                          std::chrono::duration<double>(static_cast<double>(k) / o_.patch_rate)));
          const std::string id = "lat-" + std::to_string(k % kDevices);
          stamps[k].store(ns());
          const int64_t t = ns();
          auto res = commands ? http.Post("/v1/twins/" + id + "/commands",
                                          json{{"name", "ping"}, {"args", {{"k", k}}}}.dump(),
                                          "application/json")
                              : http.Patch("/v1/twins/" + id + "/desired", json{{"seq", k}}.dump(),
                                           "application/merge-patch+json");
          if (res && !commands) {
            std::lock_guard lock(mu);
            http_ms.push_back(static_cast<double>(ns() - t) / 1e6);
          }
        }
      });
    }
    for (auto& s : senders) s.join();
  };
  const auto stages_before = gw.metrics();
  drive(false, sent);
  const json stages = stage_breakdown(stages_before, gw.metrics());
  const double bg_rate =
      (gw.metric("doppel_store_writes_total") - bg_before) / seconds_since(bg_t0);
  // No pause between the phases: after a second without messages, the measuring devices' Paho
  // client (not doppeld or the broker, which a mosquitto_sub saw deliver in ~1 ms) held the
  // next deliveries for 50-100 ms, which showed up as the command figures' maximum.
  drive(true, sent_cmd);
  // Every PATCH's delta and every command must arrive (a stall is a failure, not a figure).
  const auto settle = Clock::now();
  while (seconds_since(settle) < 30) {
    {
      std::lock_guard lock(mu);
      if (delta_ms.size() >= patches && command_ms.size() >= patches) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  gen.stop();
  for (auto& d : devices) (void)d->disconnect(std::chrono::milliseconds(500));

  std::lock_guard lock(mu);
  json r = {{"patches", patches},
            {"patch_rate", o_.patch_rate},
            {"background_target_per_s", o_.background_rate},
            {"background_committed_per_s", std::round(bg_rate)},
            {"desired_to_device_ms", percentiles_ms(delta_ms)},
            {"patch_response_ms", percentiles_ms(http_ms)},
            {"command_to_device_ms", percentiles_ms(command_ms)},
            {"stages_during_patches", stages},
            {"ok", delta_ms.size() >= patches && command_ms.size() >= patches}};
  auto row = [](const json& p) {
    return p.value("count", 0) == 0 ? std::string("none")
                                    : "p50 " + p["p50"].dump() + "  p90 " + p["p90"].dump() +
                                          "  p99 " + p["p99"].dump() + "  max " + p["max"].dump() +
                                          " ms (" + p["count"].dump() + ")";
  };
  std::vector<std::pair<std::string, std::string>> rows = {
      {"PATCH sent -> delta at device", row(r["desired_to_device_ms"])},
      {"PATCH response", row(r["patch_response_ms"])},
      {"POST command -> device", row(r["command_to_device_ms"])},
      {"where the time went during the PATCHes (every update)", ""}};
  for (auto& stage : stage_rows(stages)) rows.push_back(std::move(stage));
  print_table("latency (PATCH at " + fmt(o_.patch_rate) + "/s while ingesting " + fmt(bg_rate) +
                  " updates/s)",
              rows);
  return r;
}

}  // namespace doppel::bench
