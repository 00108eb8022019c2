#include "simulator/bench/load.h"

#include <chrono>
#include <cstdio>

namespace doppel::bench {

std::string report_payload(uint64_t n, twins::Dialect dialect) {
  char buf[128];
  std::snprintf(buf, sizeof buf,
                dialect == twins::Dialect::kAws
                    ? R"({"state":{"reported":{"temperature":%.1f,"battery":%u,"seq":%llu}}})"
                    : R"({"state":{"temperature":%.1f,"battery":%u,"seq":%llu}})",
                18.0 + static_cast<double>(n % 80) / 10.0, static_cast<unsigned>(100 - n % 100),
                static_cast<unsigned long long>(n));
  return buf;
}

std::string device_name(const std::string& prefix, uint64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%07llu", static_cast<unsigned long long>(index));
  return prefix + buf;
}

LoadGenerator::LoadGenerator(LoadOptions options) : options_(std::move(options)) {}

LoadGenerator::~LoadGenerator() { stop(); }

Status LoadGenerator::connect() {
  for (int i = 0; i < options_.connections; ++i) {
    auto c = std::make_unique<RawPublisher>();
    if (Status s = c->connect(options_.port, options_.client_prefix + std::to_string(i)); !s) {
      return s;
    }
    clients_.push_back(std::move(c));
  }
  return Status::ok();
}

void LoadGenerator::start() {
  for (size_t i = 0; i < clients_.size(); ++i) threads_.emplace_back([this, i] { run(i); });
}

void LoadGenerator::run(size_t index) {
  RawPublisher& client = *clients_[index];
  const uint64_t n = static_cast<uint64_t>(clients_.size());
  std::vector<std::string> topics;
  // This connection's devices: index, index + n, ...
  for (uint64_t d = index; d < options_.devices; d += n) {
    const std::string id = device_name(options_.id_prefix, options_.first_device + d);
    topics.push_back(options_.dialect == twins::Dialect::kAws
                         ? "$aws/things/" + id + "/shadow/update"
                         : "twins/" + id + "/reported");
  }
  if (topics.empty()) return;
  const double per_connection_rate = options_.rate / static_cast<double>(n);
  const auto start = std::chrono::steady_clock::now();
  uint64_t sent = 0;
  for (uint64_t m = index; m < options_.messages && !stop_.load(); m += n, ++sent) {
    if (per_connection_rate > 0) {
      // Paced evenly, one message at a time: bursts would distort latency measurements.
      std::this_thread::sleep_until(
          start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(static_cast<double>(sent) / per_connection_rate)));
    }
    if (!client.publish(topics[sent % topics.size()], report_payload(m, options_.dialect),
                        options_.qos, options_.window)) {
      return;
    }
    if (per_connection_rate > 0 && !client.flush()) return;
    published_.fetch_add(1, std::memory_order_relaxed);
  }
  (void)client.flush();
}

void LoadGenerator::wait() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  for (auto& c : clients_) {
    while (!c->drain(std::chrono::milliseconds(100)) && !stop_.load()) {
    }
  }
}

void LoadGenerator::stop() {
  stop_.store(true);
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  for (auto& c : clients_) c->close();
  clients_.clear();
}

uint64_t LoadGenerator::published() const { return published_.load(); }

uint64_t LoadGenerator::acknowledged() const {
  uint64_t n = 0;
  for (const auto& c : clients_) n += c->acked();
  return n;
}

std::string register_fleet(int broker_port, Gateway& gw, uint64_t twins, int connections,
                           const std::string& prefix) {
  LoadOptions l;
  l.port = broker_port;
  l.connections = connections;
  l.devices = twins;
  l.messages = twins;
  l.id_prefix = prefix;
  LoadGenerator gen(l);
  if (Status s = gen.connect(); !s) return s.to_string();
  const auto t0 = std::chrono::steady_clock::now();
  gen.start();
  double last_print = 0;
  while (gw.metric("doppel_twins") < static_cast<double>(twins)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const double t = seconds_since(t0);
    if (t - last_print >= 5) {
      last_print = t;
      std::printf("  [register] %.0f/%llu twins (%.0f/s)\n", gw.metric("doppel_twins"),
                  static_cast<unsigned long long>(twins), gw.metric("doppel_twins") / t);
      std::fflush(stdout);
    }
    if (t > 900) return "registration stalled";
  }
  gen.wait();
  gen.stop();
  std::printf("  registered %llu twins in %.1f s\n", static_cast<unsigned long long>(twins),
              seconds_since(t0));
  return {};
}

}  // namespace doppel::bench
