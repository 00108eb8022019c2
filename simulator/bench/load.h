// Load for doppel-bench: publishers (raw MQTT 3.1.1, see raw_publisher.h) that send reported
// updates for many device ids as fast as the broker accepts them (or at a fixed rate).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mqtt/client.h"
#include "simulator/bench/bench_util.h"
#include "simulator/bench/raw_publisher.h"
#include "twins/status.h"
#include "twins/twin.h"

namespace doppel::bench {

struct LoadOptions {
  int port = 1883;  // the broker on 127.0.0.1
  int connections = 2;
  uint64_t messages = 100'000;
  uint64_t devices = 1000;  // ids <id_prefix><7 digits>, round-robin
  uint64_t first_device = 0;
  std::string id_prefix = "bench-";
  std::string client_prefix = "loadgen-";
  int qos = 1;
  double rate = 0;         // messages/s over all connections; 0: as fast as possible
  uint64_t window = 2000;  // unacknowledged QoS 1 publishes per connection
  // kAws: the same reports as AWS IoT shadow updates ($aws/things/{id}/shadow/update with
  // {"state":{"reported":{...}}}).
  twins::Dialect dialect = twins::Dialect::kDoppel;
};

// The payload of the n-th update: {"state":{"temperature":...,"battery":...,"seq":n}}, or in the
// AWS dialect {"state":{"reported":{...}}}.
std::string report_payload(uint64_t n, twins::Dialect dialect = twins::Dialect::kDoppel);
std::string device_name(const std::string& prefix, uint64_t index);

class LoadGenerator {
 public:
  explicit LoadGenerator(LoadOptions options);
  ~LoadGenerator();
  Status connect();
  void start();
  // Waits until every message is queued and (QoS 1) acknowledged by the broker.
  void wait();
  void stop();
  uint64_t published() const;
  uint64_t acknowledged() const;

 private:
  void run(size_t index);

  LoadOptions options_;
  std::vector<std::unique_ptr<RawPublisher>> clients_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> published_{0};
  std::atomic<bool> stop_{false};
};

// Registers a fleet through the broker on 127.0.0.1:`broker_port`: one report from each of
// `twins` devices (ids `prefix` + 7 digits), until `gw` counts them all (progress every 5 s).
// Empty, or what went wrong.
std::string register_fleet(int broker_port, Gateway& gw, uint64_t twins, int connections,
                           const std::string& prefix);

}  // namespace doppel::bench
