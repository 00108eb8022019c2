// A lean MQTT 3.1.1 publisher over a plain loopback socket, for load generation: CONNECT, then
// PUBLISH packets written in batches, PUBACKs counted by a reader thread, at most `window`
// unacknowledged. A general client library spends most of a core per 20k messages; the load
// generator must not be what limits the measurement on a 2-core machine.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "twins/status.h"

namespace doppel::bench {

class RawPublisher {
 public:
  RawPublisher() = default;
  ~RawPublisher();
  RawPublisher(const RawPublisher&) = delete;
  RawPublisher& operator=(const RawPublisher&) = delete;

  Status connect(int port, const std::string& client_id);
  // Appends a PUBLISH to the send buffer (flushed when large, or by flush()). For QoS 1, waits
  // while `window` messages are unacknowledged.
  Status publish(const std::string& topic, const std::string& payload, int qos, uint64_t window);
  Status flush();
  // Flushes, then waits until every QoS 1 publish is acknowledged (or `timeout`).
  bool drain(std::chrono::milliseconds timeout);
  void close();
  uint64_t sent() const { return sent_.load(); }
  uint64_t acked() const { return acked_.load(); }

 private:
  void read_loop();

  int fd_ = -1;
  std::string buffer_;
  uint16_t next_id_ = 1;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> qos1_sent_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<bool> closed_{false};
  std::mutex mu_;
  std::condition_variable acked_cv_;
  std::thread reader_;
};

}  // namespace doppel::bench
