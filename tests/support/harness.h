// Integration-test harness: a real Mosquitto on a free loopback port, the real doppeld on a real
// SQLite file, doppel-sim, an HTTP client and test devices speaking MQTT. Every wait is bounded;
// polling a real process is the only waiting done here (unit tests use the fake clock).
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mqtt/client.h"
#include "simulator/local_broker.h"
#include "simulator/process.h"
#include "tests/support/temp_dir.h"
#include "twins/device_io.h"
#include "twins/document.h"

namespace httplib {
class Client;
}

namespace doppel::testing {

using sim::free_port;
using sim::Process;
using twins::json;
using namespace std::chrono_literals;

// Polls `condition` every `poll` until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = 50ms);

// The value of an unlabelled sample `name` in Prometheus text; -1 when absent.
long metric(const std::string& text, const std::string& name);
// How many times `what` occurs in `text`.
size_t occurrences(const std::string& text, const std::string& what);

// Mosquitto on 127.0.0.1:<free port>, anonymous, started by the constructor (the test fails if
// it cannot start).
class Broker : public sim::LocalBroker {
 public:
  explicit Broker(const TempDir& dir, std::vector<std::string> extra_config = {});
  ~Broker() { stop(); }
  void start();
};

// An external broker's accounts in Mosquitto's dynamic-security plugin (--device-auth with
// --broker): initialises the plugin's file in `dir` with an admin account for doppeld, as
// `mosquitto_ctrl dynsec init` does for an operator. Fails the test if the plugin is missing.
struct DynsecSetup {
  explicit DynsecSetup(const TempDir& dir);
  // For the Broker's configuration: the plugin, its file, and whether anonymous clients may
  // connect (the plugin's default access then applies to them: no subscriptions, no publishes).
  std::vector<std::string> broker_config(bool allow_anonymous = false) const;
  // Runs `mosquitto_ctrl dynsec <command...>` as the admin account against the broker on
  // 127.0.0.1:port, as an operator changing the broker's ACL would (fails the test if it fails).
  void control(int port, const std::vector<std::string>& command) const;
  // For doppeld: --device-auth and the admin account.
  std::vector<std::string> gateway_args() const;
  std::string file;
  std::string username = "doppel-gateway";
  std::string password = "a-gateway-password";
};

struct HttpResult {
  int status = 0;  // 0: no answer
  json body;
  std::string content_type;
  std::string etag;
  std::string request_id;  // X-Request-Id
};

// Whether this run's doppelds keep their twins in PostgreSQL (DOPPEL_TEST_STORE=postgres: a
// private server, a database per data directory) instead of SQLite.
bool store_is_postgres();

// The real doppeld, against `broker_uri` (empty: its embedded broker on `embedded_port`).
class Doppeld {
 public:
  // "{http_port}" in an argument becomes the doppeld's HTTP port.
  Doppeld(std::string data_dir, std::string broker_uri, std::vector<std::string> extra_args = {});
  ~Doppeld();
  // Starts and waits until /readyz is OK (fails the test otherwise).
  void start(std::chrono::milliseconds ready_within = 20s);
  // Starts a doppeld that must refuse to run (bad flags, an unusable store): waits for it to exit.
  void start_expecting_exit(std::chrono::milliseconds within = 30s);
  // Starts and waits only until it serves HTTP (/healthz), ready or not.
  void start_unready(std::chrono::milliseconds within = 20s);
  // Starts and waits until `up()` (e.g. an HTTPS probe, which request() cannot make).
  void start_with(const std::function<bool()>& up, std::chrono::milliseconds within = 20s);
  void kill9();
  // SIGTERM and wait for a clean exit; returns the exit status.
  int stop();
  bool running() { return process_.running(); }
  int http_port() const { return http_port_; }
  std::string log() const { return process_.log(); }
  pid_t pid() const { return process_.pid(); }

  HttpResult request(const std::string& method, const std::string& path,
                     const std::string& body = {},
                     const std::vector<std::pair<std::string, std::string>>& headers = {});
  HttpResult get(const std::string& path) { return request("GET", path); }
  // The raw body of a GET (e.g. /metrics).
  std::string text(const std::string& path);
  HttpResult patch_desired(const std::string& id, const json& patch,
                           std::optional<uint64_t> if_match = std::nullopt);
  // Every twin, through the paged list.
  std::vector<json> list_all();

 private:
  void launch();

  std::string data_dir_;
  std::string broker_uri_;
  std::vector<std::string> extra_;
  int http_port_;
  Process process_;
  int starts_ = 0;
};

// A test broker and a started doppeld on it, in a fresh temporary directory.
struct Stack {
  explicit Stack(std::vector<std::string> gateway_args = {});
  TempDir dir;
  Broker broker;
  Doppeld gateway;
};

// The id doppel-sim gives its i-th device.
std::string sim_id(int i);

// doppel-sim with the given arguments (--broker is added).
Process start_sim(const std::string& broker_uri, const std::string& log_file,
                  std::vector<std::string> args);

// How a test device logs in: username/password and, for ssl:// brokers, the CA to trust.
struct Login {
  std::string username;
  std::string password;
  std::string ca_file;
};

// One device, driven by the test: publishes what the test says, records what it receives.
class TestDevice {
 public:
  TestDevice(std::string id, const std::string& broker_uri,
             twins::Encoding encoding = twins::Encoding::kJson, std::string prefix = "twins",
             Login login = {});
  ~TestDevice();
  const std::string& id() const { return id_; }
  // Connects and subscribes to twins/<id>/#.
  void connect();
  // One connection attempt, for tests that expect a refusal.
  Status try_connect();
  // Subscribes and waits for the broker's answer.
  Status try_subscribe(const std::string& filter);
  bool connected() const;
  void publish(const std::string& suffix, const std::string& payload,
               const std::string& content_type = {});
  void publish_topic(const std::string& topic, const std::string& payload, bool retained = false);
  void subscribe(const std::string& filter);
  // Answers every command delivered to this device with `status` (after the callback returns
  // true for its id); nullptr stops answering. Deliveries are recorded either way.
  void answer_commands(std::optional<twins::ResultStatus> status);
  // How many times each command id was delivered.
  std::map<std::string, int> deliveries();
  // Messages received on exactly `topic` so far.
  std::vector<std::string> received_on(const std::string& topic);
  // How many messages arrived on topics other than twins/<id>/...
  size_t messages_outside_own_topics();
  // Messages received on twins/<id>/<suffix> so far.
  std::vector<std::string> received(const std::string& suffix);
  // Waits until at least `n` messages arrived on <suffix>; returns them.
  std::vector<std::string> wait_for(const std::string& suffix, size_t n,
                                    std::chrono::milliseconds timeout = 10s);
  // The same for messages on exactly `topic` (e.g. the AWS dialect's $aws/things/<id>/...).
  std::vector<std::string> wait_on(const std::string& topic, size_t n,
                                   std::chrono::milliseconds timeout = 10s);

 private:
  std::string id_;
  std::string prefix_;
  twins::Encoding encoding_;
  std::unique_ptr<mqtt::Client> client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, std::string>> messages_;  // topic, payload
  std::optional<twins::ResultStatus> answer_;
  std::map<std::string, int> deliveries_;
};

}  // namespace doppel::testing
