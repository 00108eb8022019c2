// EmbeddedBroker: the Mosquitto that `doppeld` starts when no --broker is given (DESIGN §9).
// It writes the broker's configuration into the data directory, runs mosquitto as a child
// process in its own process group (so a terminal's Ctrl-C reaches only doppeld, which stops it
// in order) that dies with doppeld even on kill -9 (PR_SET_PDEATHSIG), restarts it if it exits
// unexpectedly, and stops it on shutdown.
//
// The supervisor restarts it with backoff (0.5 s doubling to 30 s) for as long as doppeld runs,
// and state() says what it is doing.
//
// Thread-safety: start() and stop() from one thread; running(), state(), restarts() from any.
#pragma once

#include <sys/types.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "twins/status.h"

namespace doppel::gateway {

struct BrokerOptions {
  std::string data_dir;  // config, persistence and log go under <data_dir>/mosquitto
  std::string bind = "127.0.0.1";
  int port = 1883;
  std::string mosquitto_path;  // empty: search PATH, then /usr/sbin/mosquitto
  // Device authentication: with both set, anonymous clients are refused.
  std::string password_file;
  std::string acl_file;
  // TLS on the listener: with both set, clients connect with ssl://.
  std::string tls_cert_file;
  std::string tls_key_file;
  // --device-auth x509: devices must present a certificate signed by this CA (its CN becomes
  // their username and client id) and not listed in the CRL. The gateway then connects through
  // a second listener on 127.0.0.1 (a free port), with its password.
  std::string device_ca_file;
  std::string crl_file;
  // The presence and kick plugin (gateway/broker_plugin), loaded when found; its control
  // commands are taken from `gateway_user` only.
  std::string plugin_file;
  std::string gateway_user;
  // ... and relayed publishes (many QoS 0 messages in one packet) from `relay_user` only.
  std::string relay_user;
};

class EmbeddedBroker {
 public:
  explicit EmbeddedBroker(BrokerOptions options);
  ~EmbeddedBroker();

  // Writes the config, starts mosquitto and waits (up to 10 s) until it accepts connections.
  Status start();
  // SIGTERM, then SIGKILL after 5 s. Idempotent.
  void stop();
  // Makes mosquitto re-read its password and ACL files (SIGHUP).
  void reload();
  bool running() const { return pid_.load() > 0; }
  // "running", or what the supervisor is doing ("restarting: attempt 3 in 2000 ms").
  std::string state() const;
  // Restarts after unexpected exits so far.
  uint64_t restarts() const { return restarts_.load(); }
  // How often mosquitto publishes $SYS topics (the drop counter among them).
  static constexpr int kSysIntervalS = 2;
  // Restart attempts back off from 0.5 s, doubling, up to this.
  static constexpr std::chrono::milliseconds kMaxBackoff{30000};
  std::string uri() const;
  // Where doppeld itself connects: uri(), or with device certificates the loopback listener.
  std::string gateway_uri() const;
  // Who may relay publishes through the plugin (BrokerOptions::relay_user); empty: nobody.
  const std::string& relay_user() const { return options_.relay_user; }
  std::string config_path() const;
  std::string log_path() const;

 private:
  Status spawn();
  Status wait_until_listening();
  void supervise();
  // Sleeps `delay` unless stop() is called first; false when stopping.
  bool wait_or_stop(std::chrono::milliseconds delay);
  void set_state(std::string state);

  BrokerOptions options_;
  int gateway_port_ = 0;  // x509: the loopback listener for the gateway
  std::string mosquitto_;
  std::atomic<pid_t> pid_{-1};
  std::atomic<bool> stopping_{false};
  std::thread supervisor_;
  std::mutex mu_;
  std::condition_variable exited_;
  mutable std::mutex state_mu_;
  std::string state_ = "not started";
  std::atomic<uint64_t> restarts_{0};
};

// Finds an executable: `explicit_path` if set, else `name` on PATH, else `fallback`.
std::string find_executable(const std::string& explicit_path, const std::string& name,
                            const std::string& fallback);

}  // namespace doppel::gateway
