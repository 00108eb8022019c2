// A fleet of simulated devices (DESIGN §9): each its own MQTT client id with a last will, a birth
// message, periodic reports with changing values, deltas applied after a short delay and
// reported back, commands executed (deduplicated by id), full state re-reported on every
// (re)connect — and, for chosen fractions of the fleet, misbehaviour: going silent, dropping
// offline and coming back, ignoring deltas, failing or ignoring commands.
//
// Thread-safety: start()/stop() from one thread; stats() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "twins/device_io.h"

namespace doppel::mqtt {
class Client;
}

namespace doppel::sim {

struct FleetOptions {
  std::string broker = "tcp://127.0.0.1:1883";
  std::string prefix = "twins";
  std::string id_prefix = "sim-";
  size_t devices = 100;
  size_t first_index = 0;  // device ids are <id_prefix><index, 6 digits>
  twins::Encoding encoding = twins::Encoding::kJson;
  double protobuf_fraction = 0;  // with JSON encoding, this share speaks Protobuf
  int mqtt_version = 5;          // 5, or 4 for MQTT 3.1.1 (JSON only)
  // kAws: devices speak AWS IoT's shadow topics (JSON, no birth or will; a get on connect, as
  // firmware written for the AWS SDKs does).
  twins::Dialect dialect = twins::Dialect::kDoppel;
  double interval_s = 5;               // report period (declared in the birth message)
  double delta_delay_s = 0.2;          // time to "apply" a delta before reporting it
  double command_delay_s = 0.1;        // time to execute a command
  double command_fail_fraction = 0;    // of commands answered "failed"
  double command_ignore_fraction = 0;  // of devices that never answer commands
  double ignore_delta_fraction = 0;    // of devices that never apply deltas
  double silent_fraction = 0;          // of devices that stop reporting ...
  double silent_after_s = 0;           // ... this long after connecting (stay connected) ...
  double silent_for_s = 0;             // ... for this long (0: for good)
  double offline_fraction = 0;         // of devices that drop offline (last will) ...
  double offline_after_s = 10;         // ... this long after connecting ...
  double offline_for_s = 5;            // ... and reconnect after this long (0: never)
  double connect_rate = 1000;          // new connections per second
  uint64_t seed = 1;
  // Broker credentials: each device's username is its id; its password comes from
  // `passwords` (id -> password, e.g. from the API's {"credentials": true}) or `password`.
  std::map<std::string, std::string> passwords;
  std::string password;
  std::string ca_file;  // for ssl:// brokers: the CA that signed the broker's certificate
};

struct FleetStats {
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> connection_losses{0};
  std::atomic<uint64_t> births{0};
  std::atomic<uint64_t> reports{0};
  std::atomic<uint64_t> deltas_received{0};
  std::atomic<uint64_t> deltas_applied{0};
  std::atomic<uint64_t> deltas_ignored{0};
  std::atomic<uint64_t> commands_received{0};
  std::atomic<uint64_t> commands_duplicate{0};
  std::atomic<uint64_t> commands_succeeded{0};
  std::atomic<uint64_t> commands_failed{0};
  std::atomic<uint64_t> commands_ignored{0};
  std::atomic<uint64_t> errors_received{0};
  std::atomic<uint64_t> went_offline{0};
  std::atomic<uint64_t> went_silent{0};
  std::atomic<uint64_t> spoke_again{0};
  std::atomic<uint64_t> publish_failures{0};
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Starts connecting the devices (paced by connect_rate) and their schedules.
  void start();
  // Each connected device says "offline" and disconnects cleanly.
  void stop();

  const FleetStats& stats() const { return stats_; }
  size_t connected() const;
  size_t size() const { return options_.devices; }
  std::string device_id(size_t i) const;
  // One line of counters, for progress output.
  std::string progress_line() const;
  // The counters as JSON text.
  std::string summary_json() const;

 private:
  struct Device;
  class Scheduler;

  void connect(Device& d);
  void on_connected(Device& d);
  // A delta's state, applied after --delta-delay-s and reported back.
  void apply_delta(Device& d, const twins::json& state);
  void on_aws_message(Device& d, const std::string& topic, const std::string& payload);
  void on_aws_job(Device& d, const std::string& payload);
  void on_message(Device& d, const std::string& topic, const std::string& payload,
                  const std::string& content_type);
  void report(Device& d, const twins::json& state);
  // Publishes a device message; false if the device is silent, offline or the publish failed.
  bool send(Device& d, twins::InboundKind kind, const twins::DeviceMessage& message,
            twins::Encoding encoding, const std::string& command_id = {});
  std::shared_ptr<mqtt::Client> client_of(Device& d);
  bool current(Device& d, uint64_t generation);
  void tick(Device& d);
  void go_offline(Device& d);

  FleetOptions options_;
  FleetStats stats_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<bool> stopping_{false};
};

}  // namespace doppel::sim
