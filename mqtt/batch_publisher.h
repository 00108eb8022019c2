// BatchPublisher: doppeld's publishes over a connection of their own, written to the socket in
// batches. Paho hands every publish to its sending thread one by one (a command allocated and
// queued under the library's one global lock, a wake-up, a send() per message), which costs
// doppeld about as much CPU as receiving the message that caused it. And a publish that shares
// the connection on which doppeld acknowledges the devices' messages waits behind those
// acknowledgements at a busy broker: Mosquitto reads one packet per connection per turn of its
// loop, so under load the main connection's backlog at the broker held deltas and commands for
// seconds (docs/performance.md). This client speaks only what publishing needs of MQTT 3.1.1 —
// CONNECT, PUBLISH at QoS 0 and 1, PUBACK, PINGREQ — over plain TCP (tcp:// brokers: the
// embedded broker's gateway listener, or --broker tcp://...); with TLS (ssl://) everything stays
// on Paho, which also takes every publish whenever this connection is down.
//
// Messages queue in memory (bounded) while a thread writes what has accumulated with one send()
// per batch; it connects, keeps the connection alive and reconnects with backoff by itself.
// QoS 0: a message refused (not connected, queue full) is the caller's to send another way, and
// what is queued when the connection dies is gone. QoS 1: each message is kept until the broker
// acknowledges it (PUBACK); when the connection dies, every QoS 1 message not acknowledged —
// sent or still queued — is handed back, in the order published, to `handback` (the caller sends
// them another way: at least once, as QoS 1 promises; a message the broker took but whose
// PUBACK was lost arrives twice).
//
// With `relay_topic` (a broker that loads doppel_broker_plugin and lets this connection's user
// relay, gateway/broker_plugin/doppel_broker_plugin.c), QoS 0 messages travel as records inside
// one PUBLISH per batch on that topic, and the plugin publishes each inside the broker: the
// broker reads one packet per batch instead of one per message. QoS 0 messages keep their order
// among themselves; against QoS 1 ones (other topics) no order is kept.
//
// Thread-safety: publish(), connected() and unacked() from any thread; `handback` is called on
// the publisher's thread, never under its lock.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mqtt/mqtt311.h"

namespace doppel::mqtt {

// A QoS 1 message the broker did not acknowledge before the connection ended.
struct Unacknowledged {
  std::string topic;
  std::string payload;
};

struct BatchPublisherOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string client_id;
  std::string username;
  std::string password;
  size_t max_queued_bytes = 16 << 20;
  std::chrono::seconds keepalive{30};
  // QoS 1 messages not yet acknowledged, at most (packet ids are 16 bits).
  size_t max_unacked = 65535;
  // Where QoS 1 messages not acknowledged go when the connection ends (see above); empty: dropped.
  std::function<void(std::vector<Unacknowledged>)> handback;
  // Non-empty: QoS 0 messages go as relay records on this topic (above).
  std::string relay_topic;
  // A relay PUBLISH carries at most this much; a batch may take several.
  size_t max_relay_bytes = 64 << 10;
};

// The topic doppel_broker_plugin takes relayed messages on.
inline constexpr std::string_view kRelayTopic = "$CONTROL/doppel/relay/v1";

// One relay record (doppel_broker_plugin's format): topic length (2 bytes), topic, payload
// length (4 bytes, both big endian), payload.
void append_relay_record(std::string& out, std::string_view topic, std::string_view payload);

class BatchPublisher {
 public:
  explicit BatchPublisher(BatchPublisherOptions options);
  ~BatchPublisher();
  BatchPublisher(const BatchPublisher&) = delete;
  BatchPublisher& operator=(const BatchPublisher&) = delete;

  void start();
  // Writes what is queued (up to `timeout`), then disconnects.
  void stop(std::chrono::milliseconds timeout);
  // Queues a publish at QoS 0 or 1; false (nothing queued) while not connected, or when the
  // queue (or, at QoS 1, the window of unacknowledged messages) is full.
  bool publish(std::string_view topic, std::string_view payload, int qos = 0);
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  // QoS 1 messages published and not yet acknowledged by the broker.
  size_t unacked() const;

 private:
  void run();
  // A connected socket with the broker's CONNACK accepted, or -1 (the reason logged once).
  int open_connection();
  static bool write_all(int fd, const std::string& bytes) {
    return mqtt311::write_all(fd, bytes.data(), bytes.size());
  }
  // Reads what the broker sent (PUBACKs, PINGRESP) without blocking; false when the connection
  // is gone.
  bool read_acks(int fd);
  // The connection ended: forgets what was queued and hands the QoS 1 messages back.
  void connection_lost();

  struct Sent {
    uint16_t packet_id;
    std::string topic;
    std::string payload;
  };

  const BatchPublisherOptions options_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Moves the relay records gathered into one PUBLISH at the end of queued_; under mu_.
  void wrap_relay();

  std::string queued_;           // encoded packets, under mu_
  std::string relay_;            // QoS 0 relay records not yet wrapped in a PUBLISH, under mu_
  std::deque<Sent> unacked_;     // QoS 1, in the order published, until their PUBACK; under mu_
  size_t unacked_bytes_ = 0;     // under mu_
  uint16_t last_packet_id_ = 0;  // under mu_
  std::string received_;         // the run thread's: bytes from the broker not yet a whole packet
  bool stopping_ = false;
  std::chrono::steady_clock::time_point drain_until_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> batches_{0};
  std::string last_error_;  // the run thread's; logged when it changes
};

}  // namespace doppel::mqtt
