// MqttChannel: the gateway's side of the device transport (DESIGN §4), implementing the
// DeviceChannel port. It holds one persistent MQTT 5 session (clean start off, long session
// expiry) so the broker queues device messages while the gateway is away, subscribes with QoS 1
// after every (re)connect, turns each device message into a DeviceInput for the runtime, and
// publishes the runtime's outbound messages at QoS 1.
//
// Thread-safety: publish() and connected() from any thread; the sink is called on Paho's thread
// and may block (that is the backpressure towards the broker).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "mqtt/client.h"
#include "twins/device_io.h"
#include "twins/document.h"
#include "twins/metrics.h"
#include "twins/ports.h"

namespace doppel::mqtt {

struct ChannelOptions {
  ClientOptions client;  // uri, client id, credentials, TLS
  std::string prefix = "twins";
  twins::Limits limits;
};

class MqttChannel final : public twins::DeviceChannel {
 public:
  MqttChannel(ChannelOptions options, Metrics& metrics);
  ~MqttChannel() override;

  // Where device messages go (the runtime). Set before start().
  void set_sink(std::function<void(twins::DeviceInput)> sink);
  // Connects in the background, retrying until the broker is reachable.
  void start();
  // Waits up to `timeout` for in-flight publishes, then disconnects (the session stays).
  void stop(std::chrono::milliseconds timeout);
  bool connected() const;

  void publish(twins::Outbound message) override;

 private:
  void on_message(IncomingMessage&& msg);

  ChannelOptions options_;
  Client client_;
  std::function<void(twins::DeviceInput)> sink_;
  Counter* in_[4] = {};
  Counter* out_[4] = {};
  Counter* publish_failures_ = nullptr;
  Counter* bad_topics_ = nullptr;
  Counter* connection_losses_ = nullptr;
};

}  // namespace doppel::mqtt
