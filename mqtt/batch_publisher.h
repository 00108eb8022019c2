// BatchPublisher: QoS 0 publishes over a connection of its own, written to the socket in
// batches. Paho hands every publish to its sending thread one by one (a command allocated and
// queued under the library's one global lock, a wake-up, a send() per message), which costs
// doppeld about as much CPU as receiving the message that caused it; QoS 0 answers need none of
// that (no packet ids, no acknowledgements, nothing to resend). This client speaks only what
// they need of MQTT 3.1.1 — CONNECT, PUBLISH at QoS 0, PINGREQ — over plain TCP (tcp:// brokers:
// the embedded broker's gateway listener, or --broker tcp://...); with TLS (ssl://) everything
// stays on Paho, which also takes QoS 0 whenever this connection is down.
//
// Messages queue in memory (bounded) while a thread writes what has accumulated with one send()
// per batch; it connects, keeps the connection alive and reconnects with backoff by itself.
// QoS 0 semantics: a message queued while the connection is down, or past the bound, is dropped
// (publish() says so, and the caller may send it another way).
//
// Thread-safety: publish() and connected() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "mqtt/mqtt311.h"

namespace doppel::mqtt {

struct BatchPublisherOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string client_id;
  std::string username;
  std::string password;
  size_t max_queued_bytes = 16 << 20;
  std::chrono::seconds keepalive{30};
};

class BatchPublisher {
 public:
  explicit BatchPublisher(BatchPublisherOptions options);
  ~BatchPublisher();
  BatchPublisher(const BatchPublisher&) = delete;
  BatchPublisher& operator=(const BatchPublisher&) = delete;

  void start();
  // Writes what is queued (up to `timeout`), then disconnects.
  void stop(std::chrono::milliseconds timeout);
  // Queues a QoS 0 publish; false (nothing queued) while not connected or when the queue is full.
  bool publish(std::string_view topic, std::string_view payload);
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }

 private:
  void run();
  // A connected socket with the broker's CONNACK accepted, or -1 (the reason logged once).
  int open_connection();
  static bool write_all(int fd, const std::string& bytes) {
    return mqtt311::write_all(fd, bytes.data(), bytes.size());
  }

  const BatchPublisherOptions options_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string queued_;  // encoded packets, under mu_
  bool stopping_ = false;
  std::chrono::steady_clock::time_point drain_until_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> batches_{0};
  std::string last_error_;  // the run thread's; logged when it changes
};

}  // namespace doppel::mqtt
