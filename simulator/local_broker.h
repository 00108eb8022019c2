// A Mosquitto of our own on 127.0.0.1:<free port>, for tests and doppel-bench: configuration in
// a directory of the caller's, anonymous access, queues deep enough for load, killed with us.
#pragma once

#include <string>
#include <vector>

#include "simulator/process.h"
#include "twins/status.h"

namespace doppel::sim {

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();
// Whether something accepts connections on 127.0.0.1:port.
bool port_open(int port);
// The current user's name (Mosquitto run as root must be told to stay root).
std::string user_name();

class LocalBroker {
 public:
  // Writes <dir>/mosquitto.conf (plus `extra_config` lines) for a free port.
  LocalBroker(const std::string& dir, std::vector<std::string> extra_config = {});
  // Starts mosquitto and waits until it listens (10 s at most).
  Status start();
  void stop() { process_.stop(); }
  void kill9();
  int port() const { return port_; }
  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return process_.pid(); }
  Process& process() { return process_; }

 private:
  std::string conf_;
  std::string log_;
  int port_;
  Process process_;
};

}  // namespace doppel::sim
