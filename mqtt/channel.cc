#include "mqtt/channel.h"

#include "mqtt/aws_codec.h"
#include "mqtt/aws_topics.h"
#include "mqtt/codec.h"
#include "mqtt/topics.h"
#include "twins/closed_set.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::mqtt {
namespace {

using twins::InboundKind;
using twins::OutboundKind;

constexpr std::string_view kBrokerDroppedTopic = "$SYS/broker/publish/messages/dropped";

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr twins::NameTable<OutboundKind, twins::kOutboundKindCount> kOutboundNames{
    {"delta", "twin", "command", "error", "reply"}};
static_assert(kOutboundNames.covers(OutboundKind::kReply));

}  // namespace

MqttChannel::MqttChannel(ChannelOptions options, Metrics& metrics)
    : options_(std::move(options)), client_(options_.client) {
  if (options_.batch_port > 0) {
    auto lane = [this](std::string_view suffix, const std::string& username, bool relay) {
      BatchPublisherOptions b;
      if (relay) b.relay_topic = std::string(kRelayTopic);
      b.host = options_.batch_host;
      b.port = options_.batch_port;
      b.client_id = options_.client.client_id + std::string(suffix);
      b.username = username.empty() ? options_.client.username : username;
      b.password = options_.client.password;
      // QoS 1 messages the broker had not acknowledged when a batch connection ended: Paho
      // sends them, in the order they were published (JSON only goes this way: no content type).
      b.handback = [this](std::vector<Unacknowledged> messages) {
        for (Unacknowledged& m : messages) {
          if (Status s = client_.publish(m.topic, std::move(m.payload), 1, std::string()); !s) {
            publish_failures_->inc();
            log_warn("publish to " + m.topic + " failed: " + s.to_string());
          }
        }
      };
      return std::make_unique<BatchPublisher>(std::move(b));
    };
    batch_ = lane(kBatchSuffix, options_.batch_username, options_.batch_relay);
    bulk_ = lane(kBulkSuffix, options_.bulk_username, false);
  }
  for (size_t i = 0; i < twins::kInboundKindCount; ++i) {
    const auto k = static_cast<InboundKind>(i);
    in_[i] =
        &metrics.counter("doppel_mqtt_messages_in_total", "MQTT messages received from devices",
                         "kind=\"" + std::string(twins::to_string(k)) + "\"");
  }
  for (size_t i = 0; i < twins::kOutboundKindCount; ++i) {
    const auto k = static_cast<OutboundKind>(i);
    out_[i] =
        &metrics.counter("doppel_mqtt_messages_out_total", "MQTT messages published to devices",
                         "kind=\"" + std::string(kOutboundNames.name(k)) + "\"");
  }
  publish_failures_ = &metrics.counter("doppel_mqtt_publish_failures_total",
                                       "Publishes the MQTT client refused (buffer full)");
  bad_topics_ = &metrics.counter("doppel_mqtt_bad_topics_total",
                                 "Messages on topics outside the scheme or with invalid ids");
  connection_losses_ = &metrics.counter("doppel_mqtt_connection_losses_total",
                                        "Times the broker connection was lost");
  connect_failures_ = &metrics.counter(
      "doppel_mqtt_connect_failures_total",
      "Attempts to reach the broker before the first connection that failed (doppeld retries)");
  presence_ = &metrics.counter(
      "doppel_broker_disconnects_total",
      "Device disconnections the embedded broker's plugin reported (each marks the twin offline)");
  connects_ = &metrics.counter(
      "doppel_broker_connects_total",
      "Device connections the embedded broker's notices reported (each marks the twin online)");
  retained_ignored_ = &metrics.counter(
      "doppel_mqtt_retained_ignored_total",
      "Retained device messages replayed by the broker and ignored (they are not news)");
  broker_dropped_ = &metrics.counter(
      "doppel_broker_dropped_messages_total",
      "Messages the broker dropped because a client's queue was full ($SYS drop counter)");
  metrics.gauge_fn("doppel_broker_dropping", "1 while the broker has been dropping messages",
                   [this] { return broker_dropping() ? 1.0 : 0.0; });
  metrics.gauge_fn("doppel_mqtt_connected",
                   "1 when connected to the broker and its subscriptions are granted",
                   [this] { return connected() ? 1.0 : 0.0; });
  metrics.gauge_fn(
      "doppel_mqtt_batch_connected",
      "1 when the second connection, for publishes in batches, is up (plain-TCP brokers)",
      [this] { return batch_ && batch_->connected() ? 1.0 : 0.0; });
  metrics.gauge_fn(
      "doppel_mqtt_bulk_connected",
      "1 when the third connection, for job rollouts' publishes, is up (plain-TCP brokers)",
      [this] { return bulk_ && bulk_->connected() ? 1.0 : 0.0; });

  client_.on_message([this](IncomingMessage&& m) { on_message(std::move(m)); });
  client_.on_connected([this] {
    log_info("connected to broker " + options_.client.uri + "; subscribing");
    // Re-subscribe after every (re)connect: a new or expired session has no subscriptions.
    subscribe_device_topics();
    // Separately: a broker that refuses $SYS must not cost the device subscriptions.
    (void)client_.subscribe({std::string(kBrokerDroppedTopic)}, 0, std::chrono::milliseconds(0));
  });
  client_.on_connect_failed([this](const Status& why, std::chrono::milliseconds retry_in) {
    connect_failures_->inc();
    log_warn(why.message() + "; is the broker running? retrying in " +
             std::to_string(retry_in.count()) + " ms");
  });
  client_.on_connection_lost([this](const std::string& cause) {
    connection_losses_->inc();
    log_warn("lost the broker connection (" + cause + "); reconnecting");
  });
}

void MqttChannel::subscribe_device_topics() {
  std::vector<std::string> topics = gateway_subscriptions(options_.prefix);
  for (auto& t : aws_gateway_subscriptions()) topics.push_back(std::move(t));
  topics.emplace_back(std::string(kPresencePrefix) + "+");
  if (options_.broker_notices) topics.emplace_back(kBrokerNoticeTopic);
  subscriptions_.store(Link::kSubscribing);
  client_.subscribe_then(topics, 1, [this](const Status& s) {
    subscriptions_.store(s.is_ok() ? Link::kUp : Link::kRefused);
    // Said once per refusing spell, not at every reconnect.
    if (!s && refusals_.fetch_add(1) == 0) {
      log_error(
          "subscribing failed: " + s.to_string() +
          "; doppeld stays unready (no device message would reach it): allow its broker user "
          "to subscribe to the device topics; it subscribes again when it reconnects (restart "
          "it if the broker does not disconnect it when its rights change)");
    } else if (s && refusals_.exchange(0) > 0) {
      log_info("the broker granted the device topics' subscriptions; ready");
    }
  });
}

MqttChannel::~MqttChannel() { stop(std::chrono::milliseconds(1000)); }

void MqttChannel::set_sink(std::function<void(twins::DeviceInput)> sink) {
  sink_ = std::move(sink);
}

void MqttChannel::start() {
  if (batch_) batch_->start();
  if (bulk_) bulk_->start();
  client_.connect_in_background();
  poller_ = std::thread([this] {
    name_this_thread("mqtt-drops");
    poll_drop_counter();
  });
}

void MqttChannel::stop(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(poll_mu_);
    stopping_ = true;
  }
  poll_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  if (batch_) batch_->stop(timeout);
  if (bulk_) bulk_->stop(timeout);
  (void)client_.disconnect(timeout);
}

void MqttChannel::poll_drop_counter() {
  std::unique_lock lock(poll_mu_);
  while (!poll_cv_.wait_for(lock, kDropCounterPoll, [this] { return stopping_; })) {
    // Subscribing again makes the broker send the counter's retained value now.
    if (client_.connected()) {
      (void)client_.subscribe({std::string(kBrokerDroppedTopic)}, 0, std::chrono::milliseconds(0));
    }
  }
}

bool MqttChannel::connected() const { return link() == Link::kUp; }

MqttChannel::Link MqttChannel::link() const {
  return client_.connected() ? subscriptions_.load() : Link::kDown;
}

bool MqttChannel::broker_dropping() const {
  return steady_ms() - last_drop_ms_.load() <
         std::chrono::duration_cast<std::chrono::milliseconds>(kDroppingWindow).count();
}

void MqttChannel::on_broker_dropped(const std::string& payload) {
  int64_t now_value = 0;
  try {
    now_value = std::stoll(payload);
  } catch (const std::exception&) {
    return;
  }
  const int64_t before = broker_reported_.exchange(now_value);
  // The first report only sets the baseline: what the broker dropped before we watched (or
  // before its last restart, when the counter went backwards) is not ours to count again.
  if (before < 0 || now_value <= before) return;
  const int64_t dropped = now_value - before;
  broker_dropped_->inc(static_cast<uint64_t>(dropped));
  last_drop_ms_.store(steady_ms());
  log_warn("the broker dropped " + std::to_string(dropped) + " messages (" +
           std::to_string(broker_dropped_->value()) +
           " since doppeld started): a client's queue is full — if it is the gateway's, device "
           "reports arrive faster than doppeld commits them; see README, Overload");
}

void MqttChannel::on_message(IncomingMessage&& msg) {
  if (msg.topic == kBrokerDroppedTopic) return on_broker_dropped(msg.payload);
  if (msg.topic == kBrokerNoticeTopic) return on_broker_notice(msg.payload);
  if (msg.retained) {
    // A replay of the broker's retained store (after subscribing), not something the device
    // just said: applying it would roll a twin back to an old state or revive an offline one.
    retained_ignored_->inc();
    if (log_enabled(LogLevel::kDebug)) log_debug("ignored retained message on " + msg.topic);
    return;
  }
  if (is_aws_topic(msg.topic)) return on_aws_message(std::move(msg));
  if (msg.topic.starts_with(kPresencePrefix)) return on_presence(std::move(msg));
  auto topic = parse_inbound_topic(msg.topic, options_.prefix, options_.limits);
  std::optional<twins::Encoding> encoding;
  if (msg.content_type == kProtobufContentType) {
    encoding = twins::Encoding::kProtobuf;
  } else if (msg.content_type == kJsonContentType) {
    encoding = twins::Encoding::kJson;
  }
  if (!topic) {
    bad_topics_->inc();
    if (log_enabled(LogLevel::kDebug)) log_debug("bad topic: " + topic.status().to_string());
    // Tell the device if its topic names a usable (if invalid) id.
    const std::string segment = raw_device_segment(msg.topic, options_.prefix);
    if (!segment.empty()) {
      static const WireCodec kCodec;
      const auto enc = encoding.value_or(twins::Encoding::kJson);
      twins::ErrorOut err{msg.topic, std::string(code_name(topic.status().code())),
                          topic.status().message(), ""};
      (void)client_.publish(
          outbound_topic(options_.prefix, segment, OutboundKind::kError), kCodec.encode(err, enc),
          1, enc == twins::Encoding::kProtobuf ? std::string(kProtobufContentType) : std::string());
      out_[static_cast<size_t>(OutboundKind::kError)]->inc();
    }
    return;
  }
  deliver(std::move(*topic), std::move(msg), encoding, twins::Dialect::kDoppel);
}

void MqttChannel::deliver(InboundTopic&& topic, IncomingMessage&& msg,
                          std::optional<twins::Encoding> encoding, twins::Dialect dialect) {
  in_[static_cast<size_t>(topic.kind)]->inc();
  if (!sink_) return;
  twins::DeviceInput input;
  input.device_id = std::move(topic.device_id);
  input.kind = topic.kind;
  input.command_id = std::move(topic.command_id);
  input.topic = std::move(msg.topic);
  input.payload = std::move(msg.payload);
  input.content_encoding = encoding;
  input.dialect = dialect;
  sink_(std::move(input));
}

bool MqttChannel::own_connection(const std::string& client_id) const {
  return client_id == options_.client.client_id ||
         client_id == options_.client.client_id + std::string(kBatchSuffix) ||
         client_id == options_.client.client_id + std::string(kBulkSuffix) ||
         (!options_.batch_username.empty() && client_id == options_.batch_username) ||
         (!options_.bulk_username.empty() && client_id == options_.bulk_username);
}

void MqttChannel::on_presence(IncomingMessage&& msg) {
  // The broker's plugin: "offline" when a device's connection ended (no will needed).
  const std::string id = msg.topic.substr(kPresencePrefix.size());
  if (msg.payload != "offline" || own_connection(id)) return;
  presence_->inc();
  broker_presence(id, false, std::move(msg.topic));
}

void MqttChannel::on_broker_notice(const std::string& notice) {
  // "<time>: New client connected from <address> as <client id> (p2, c1, k60[, u'<user>'])."
  // With --device-auth the client id is the username (use_username_as_clientid); doppeld's own
  // connection is not a device.
  static constexpr std::string_view kConnected = ": New client connected from ";
  const size_t at = notice.find(kConnected);
  if (at == std::string::npos) return;
  const size_t as = notice.find(" as ", at + kConnected.size());
  const size_t props = notice.rfind(" (p");
  if (as == std::string::npos || props == std::string::npos || props < as + 4) return;
  const std::string id = notice.substr(as + 4, props - as - 4);
  if (own_connection(id)) return;
  connects_->inc();
  broker_presence(id, true, std::string(kBrokerNoticeTopic));
}

void MqttChannel::broker_presence(const std::string& id, bool online, std::string topic) {
  if (!twins::check_device_id(id, options_.limits) || !sink_) return;
  twins::DeviceInput input;
  input.device_id = id;
  input.kind = InboundKind::kStatus;
  input.topic = std::move(topic);
  input.payload = online ? R"({"state":"online"})" : R"({"state":"offline"})";
  input.content_encoding = twins::Encoding::kJson;
  input.from_broker = true;
  sink_(std::move(input));
}

void MqttChannel::kick(const std::string& username) {
  if (Status s = client_.publish(std::string(kBrokerControlTopic), "kick " + username, 1, {}); !s) {
    log_warn("could not ask the broker to disconnect '" + username + "': " + s.to_string());
  }
}

void MqttChannel::on_aws_message(IncomingMessage&& msg) {
  auto topic = parse_aws_topic(msg.topic, options_.limits);
  if (!topic) {
    bad_topics_->inc();
    if (log_enabled(LogLevel::kDebug)) log_debug("bad topic: " + topic.status().to_string());
    // Answer on the request's rejected topic, as AWS does (a named shadow's: 404).
    const std::string rejected = aws_rejected_topic(msg.topic);
    if (!rejected.empty()) {
      const std::string token = aws_client_token(msg.payload, options_.limits);
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      twins::ErrorOut err{msg.topic, std::string(code_name(topic.status().code())),
                          topic.status().message(), token, now_ms};
      (void)client_.publish(rejected, encode_aws(err), 0, std::string());
      out_[static_cast<size_t>(OutboundKind::kError)]->inc();
    }
    return;
  }
  deliver(std::move(*topic), std::move(msg), std::nullopt, twins::Dialect::kAws);
}

BatchPublisher* MqttChannel::lane_of(const twins::Outbound& message) const {
  return message.bulk && bulk_ ? bulk_.get() : batch_.get();
}

void MqttChannel::publish(twins::Outbound message) {
  if (message.dialect == twins::Dialect::kAws) {
    // AWS devices subscribe at QoS 0, so answers go at QoS 0 (the delta, which reconciliation
    // re-sends, included); only a job notice goes at QoS 1.
    const std::string topic = message.jobs_topic.empty()
                                  ? aws_outbound_topic(message.device_id, message.kind, message.op)
                                  : aws_jobs_topic(message.device_id, message.jobs_topic);
    const int qos = message.kind == OutboundKind::kCommand ? 1 : 0;
    BatchPublisher* lane = lane_of(message);
    if (lane != nullptr && (qos == 0 || client_.connected_as_reported()) &&
        lane->publish(topic, message.payload, qos)) {
      out_[static_cast<size_t>(message.kind)]->inc();
      return;
    }
    Status s = client_.publish(topic, std::move(message.payload), qos, std::string());
    if (s) {
      out_[static_cast<size_t>(message.kind)]->inc();
    } else {
      publish_failures_->inc();
      log_warn("publish to " + topic + " failed: " + s.to_string());
    }
    return;
  }
  const std::string topic =
      outbound_topic(options_.prefix, message.device_id, message.kind, message.command_id);
  const bool proto = message.encoding == twins::Encoding::kProtobuf;
  // Off the main connection, where it would wait behind doppeld's acknowledgements of the
  // devices' messages at a busy broker (batch_publisher.h). Not while the main connection is
  // down: Paho holds what was published meanwhile, and a newer message must not overtake it.
  BatchPublisher* lane = lane_of(message);
  if (!proto && lane != nullptr && client_.connected_as_reported() &&
      lane->publish(topic, message.payload, 1)) {
    out_[static_cast<size_t>(message.kind)]->inc();
    return;
  }
  Status s = client_.publish(topic, std::move(message.payload), 1,
                             proto ? std::string(kProtobufContentType) : std::string());
  if (s) {
    out_[static_cast<size_t>(message.kind)]->inc();
  } else {
    publish_failures_->inc();
    log_warn("publish to " + topic + " failed: " + s.to_string());
  }
}

}  // namespace doppel::mqtt
