// A small MQTT client over Paho's async client, shared by the gateway's channel and the
// simulated devices: MQTT 5 (or 3.1.1), optional persistent session, last will, TLS, a connect
// loop that keeps trying until the broker appears, and automatic reconnect afterwards. Paho's
// headers and exceptions stay inside; failures come back as Status.
//
// Thread-safety: all members are thread-safe. Callbacks run on Paho's threads and must not call
// disconnect(); they should return quickly.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "twins/status.h"

namespace doppel::mqtt {

struct TlsOptions {
  std::string ca_file;    // trust store: the CA that signed the broker's certificate
  std::string cert_file;  // client certificate (optional)
  std::string key_file;   // client key (optional)
};

struct WillMessage {
  std::string topic;
  std::string payload;
  std::string content_type;
};

struct ClientOptions {
  std::string uri;  // tcp://host:port or ssl://host:port
  std::string client_id;
  std::string username;
  std::string password;
  int mqtt_version = 5;  // 5, or 4 for 3.1.1
  bool clean_start = true;
  uint32_t session_expiry_s = 0;  // MQTT 5; with clean_start false the session outlives us
  int keepalive_s = 20;
  std::optional<WillMessage> will;
  std::optional<TlsOptions> tls;
  int max_buffered = 200'000;  // publishes held while disconnected
  int max_inflight = 1000;
  std::chrono::milliseconds min_retry{250};
  std::chrono::milliseconds max_retry{5000};
};

struct IncomingMessage {
  std::string topic;
  std::string payload;
  std::string content_type;  // MQTT 5 content type; empty when none
  // The broker delivered it from its retained store (a replay after subscribing), not live.
  bool retained = false;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Set before connecting.
  void on_message(std::function<void(IncomingMessage&&)> handler);
  void on_connected(std::function<void()> handler);  // after every (re)connect
  void on_connection_lost(std::function<void(const std::string& cause)> handler);
  // After each failed attempt of connect_in_background(), with why and the wait before the next.
  void on_connect_failed(
      std::function<void(const Status& why, std::chrono::milliseconds retry_in)> handler);

  // One attempt, waiting up to `timeout`.
  Status connect(std::chrono::milliseconds timeout);
  // Keeps trying in the background (with backoff) until connected or disconnect() is called;
  // Paho's automatic reconnect takes over after the first success.
  void connect_in_background();
  // Subscribes and waits up to `timeout` for the broker's answer (not at all when it is 0, which
  // is what a Paho callback must use).
  Status subscribe(const std::vector<std::string>& filters, int qos,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Subscribes without waiting; `done` runs on a Paho thread with the broker's answer (every
  // filter granted, or why not).
  void subscribe_then(const std::vector<std::string>& filters, int qos,
                      std::function<void(const Status&)> done);
  // Queues a publish; never blocks on the network. Buffered while disconnected.
  Status publish(const std::string& topic, std::string payload, int qos,
                 const std::string& content_type = {}, bool retained = false);
  // Stops reconnecting and disconnects, letting in-flight messages finish for up to `timeout`.
  // With `send_will`, the broker publishes the last will (as if the connection dropped).
  Status disconnect(std::chrono::milliseconds timeout, bool send_will = false);
  bool connected() const;
  // As Paho last reported it (connected / connection lost), without taking Paho's lock.
  bool connected_as_reported() const;
  const std::string& client_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace doppel::mqtt
