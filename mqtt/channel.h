// MqttChannel: the gateway's side of the device transport (DESIGN §4), implementing the
// DeviceChannel port. It holds one persistent MQTT 5 session (clean start off, long session
// expiry) so the broker queues device messages while the gateway is away, subscribes with QoS 1
// after every (re)connect, turns each device message into a DeviceInput for the runtime, and
// publishes the runtime's outbound messages at QoS 1.
//
// Thread-safety: publish() and connected() from any thread; the sink is called on Paho's thread
// and may block (that is the backpressure towards the broker).
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "mqtt/batch_publisher.h"
#include "mqtt/client.h"
#include "mqtt/topics.h"
#include "twins/device_io.h"
#include "twins/document.h"
#include "twins/metrics.h"
#include "twins/ports.h"

namespace doppel::mqtt {

struct ChannelOptions {
  ClientOptions client;  // uri, client id, credentials, TLS
  std::string prefix = "twins";
  twins::Limits limits;
  // The embedded broker publishes its notices on $SYS/broker/log/N (log_dest topic): each
  // "New client connected ... as {id}" puts twin {id} online at once (no birth message needed).
  bool broker_notices = false;
  // Publishes go through a BatchPublisher (batch_publisher.h) to this plain-TCP broker, on a
  // connection of their own, with the client's credentials: QoS 0 answers (the AWS dialect's)
  // and the QoS 1 deltas, commands and replies of Doppel's topics in JSON (Protobuf ones carry
  // an MQTT 5 content type, which that client does not speak). Port 0: through Paho like
  // everything else. Paho takes them whenever the batch connection is down, and takes back the
  // QoS 1 messages the broker had not acknowledged when it went down.
  std::string batch_host;
  int batch_port = 0;
  std::string batch_username;  // empty: the client's (the password is the client's)
  // The broker loads doppel_broker_plugin with plugin_opt_relay_user set to the batch
  // connection's user: QoS 0 publishes (the AWS dialect's answers and deltas) reach it as relay
  // records, many per packet (BatchPublisherOptions::relay_topic).
  bool batch_relay = false;
  // Job rollouts' publishes (Outbound::bulk) take a third connection to the same broker, so that
  // an operator's delta or a device's reply never waits behind a rollout's backlog at the broker.
  std::string bulk_username;  // empty: the client's
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
  // Connected, and the broker granted the device topics' subscriptions of this connection (only
  // then does a device's message reach doppeld: /readyz waits for it).
  bool connected() const;
  // Where the connection to the broker stands, for /readyz to say why it is not ready.
  enum class Link {
    kDown,         // not connected (connecting, or reconnecting after a loss)
    kSubscribing,  // connected; the device topics' subscriptions not answered yet
    kRefused,      // connected, but the broker refused a device topic's subscription
    kUp,           // connected and subscribed: device messages reach doppeld
  };
  Link link() const;

  // Overload at the broker: Mosquitto's $SYS/broker/publish/messages/dropped counts messages it
  // dropped because a client's queue was full — for the gateway, device messages lost before
  // they reached doppeld. The channel subscribes to it (the broker publishes it every
  // sys_interval), exports the increase as doppel_broker_dropped_messages_total, and logs it.
  uint64_t broker_dropped() const { return broker_dropped_->value(); }
  // True while drops were seen in the last kDroppingWindow.
  bool broker_dropping() const;
  static constexpr std::chrono::seconds kDroppingWindow{10};
  // The broker publishes the counter only when it changes, and a report sent while the gateway
  // is behind can itself be dropped: the channel re-reads it (a retained topic) this often.
  static constexpr std::chrono::seconds kDropCounterPoll{5};

  void publish(twins::Outbound message) override;

  // Where the embedded broker's plugin (gateway/broker_plugin) reports disconnections, and where
  // it takes commands.
  static constexpr std::string_view kPresencePrefix = "$doppel/presence/";
  static constexpr std::string_view kBrokerControlTopic = "$CONTROL/doppel/v1";
  static constexpr std::string_view kBrokerNoticeTopic = "$SYS/broker/log/N";
  // The batch publisher's client id: the channel's with this suffix (named when it carried only
  // QoS 0 answers; kept, as brokers' ACLs may name it).
  static constexpr std::string_view kBatchSuffix = "-qos0";
  // ... and the bulk publisher's (job rollouts).
  static constexpr std::string_view kBulkSuffix = "-bulk";
  // Asks the embedded broker to disconnect every connection of `username` (after a revocation).
  void kick(const std::string& username);

 private:
  void on_message(IncomingMessage&& msg);
  void on_presence(IncomingMessage&& msg);
  void on_broker_notice(const std::string& notice);
  // Whether `client_id` is one of doppeld's own connections (not a device): their connections
  // and disconnections are not presence.
  bool own_connection(const std::string& client_id) const;
  // Hands the broker's word that device `id` connected or disconnected to the sink.
  void broker_presence(const std::string& id, bool online, std::string topic);
  // A message on $aws/things/... (the AWS dialect, aws_topics.h).
  void on_aws_message(IncomingMessage&& msg);
  // Hands a parsed device message to the sink (the runtime).
  void deliver(InboundTopic&& topic, IncomingMessage&& msg, std::optional<twins::Encoding> encoding,
               twins::Dialect dialect);
  void on_broker_dropped(const std::string& payload);
  void poll_drop_counter();
  // Subscribes to every topic doppeld listens on; subscriptions_ follows the broker's answer.
  void subscribe_device_topics();

  ChannelOptions options_;
  Client client_;
  // Which batch connection `message` goes to (nullptr: none; Paho takes it).
  BatchPublisher* lane_of(const twins::Outbound& message) const;

  std::unique_ptr<BatchPublisher> batch_;  // when batch_port is set
  std::unique_ptr<BatchPublisher> bulk_;   // job rollouts, when batch_port is set
  std::function<void(twins::DeviceInput)> sink_;
  Counter* in_[twins::kInboundKindCount] = {};
  Counter* out_[twins::kOutboundKindCount] = {};
  Counter* publish_failures_ = nullptr;
  Counter* bad_topics_ = nullptr;
  Counter* connection_losses_ = nullptr;
  Counter* connect_failures_ = nullptr;
  Counter* retained_ignored_ = nullptr;
  Counter* presence_ = nullptr;
  Counter* connects_ = nullptr;
  Counter* broker_dropped_ = nullptr;
  // The device topics' subscriptions since the latest (re)connect: none answered yet, granted, or
  // refused (a Link value among kSubscribing, kUp, kRefused).
  std::atomic<Link> subscriptions_{Link::kSubscribing};
  std::atomic<int> refusals_{0};              // refused subscribes in a row (across reconnects)
  std::atomic<int64_t> broker_reported_{-1};  // the broker's counter at its last report
  std::atomic<int64_t> last_drop_ms_{INT64_MIN / 2};  // steady clock, ms
  std::thread poller_;
  std::mutex poll_mu_;
  std::condition_variable poll_cv_;
  bool stopping_ = false;  // under poll_mu_
};

}  // namespace doppel::mqtt
