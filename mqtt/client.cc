#include "mqtt/client.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <mqtt/async_client.h>

namespace doppel::mqtt {

namespace {

// The broker grants or refuses each filter (0x80 and above: refused, e.g. by its ACL).
Status granted(const ::mqtt::token& tok) {
  try {
    const ::mqtt::subscribe_response response = tok.get_subscribe_response();
    for (auto rc : response.get_reason_codes()) {
      if (static_cast<int>(rc) >= 0x80) {
        return Status(StatusCode::kUnavailable,
                      "the broker refused the subscription (reason code " +
                          std::to_string(static_cast<int>(rc)) + ")");
      }
    }
    return Status::ok();
  } catch (const ::mqtt::exception& e) {
    // Paho throws here itself when the broker refused a filter (an MQTT 5 reason code >= 0x80);
    // from a Paho callback thread, an escaping exception would end the process.
    return Status(StatusCode::kUnavailable,
                  std::string("the broker refused the subscription (") + e.what() + ")");
  }
}

// Paho's listener for one subscribe: hands the answer on once. The client owns it (Paho only
// points to it), so one whose answer never comes is freed with the client.
class SubscribeListener : public ::mqtt::iaction_listener {
 public:
  explicit SubscribeListener(std::function<void(const Status&)> done) : done_(std::move(done)) {}
  void on_success(const ::mqtt::token& tok) override { finish(granted(tok)); }
  void on_failure(const ::mqtt::token& tok) override {
    finish(Status(StatusCode::kUnavailable,
                  "subscribe failed (reason code " + std::to_string(tok.get_return_code()) + ")"));
  }
  void finish(const Status& s) {
    if (answered_.exchange(true)) return;
    done_(s);
    finished_.store(true);  // last: from here on the client may free it
  }
  bool finished() const { return finished_.load(); }

 private:
  std::function<void(const Status&)> done_;
  std::atomic<bool> answered_{false};
  std::atomic<bool> finished_{false};
};

}  // namespace

struct Client::Impl : public ::mqtt::callback {
  ClientOptions options;
  // Before `client`, so that they outlive it: Paho may answer a subscribe while it shuts down.
  std::mutex listeners_mu;
  std::vector<std::unique_ptr<SubscribeListener>> listeners;
  std::unique_ptr<::mqtt::async_client> client;
  ::mqtt::connect_options connect_options;
  std::function<void(IncomingMessage&&)> message_handler;
  std::function<void()> connected_handler;
  std::function<void(const std::string&)> lost_handler;
  std::function<void(const Status&, std::chrono::milliseconds)> connect_failed_handler;
  std::atomic<bool> connected_flag{false};
  std::atomic<bool> closing{false};
  std::thread connector;
  std::mutex mu;
  std::condition_variable cv;

  explicit Impl(ClientOptions o) : options(std::move(o)) {
    ::mqtt::create_options create(options.mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1,
                                  options.max_buffered);
    create.set_send_while_disconnected(true, true);
    create.set_delete_oldest_messages(false);
    client =
        std::make_unique<::mqtt::async_client>(options.uri, options.client_id, create, nullptr);
    // Built in place, never copied or moved: Paho C++ 1.2's connect_options copy and move lose
    // the MQTT 5 properties pointer (paho.mqtt.cpp issues #444 and #445), which crashes connect.
    connect_options.set_mqtt_version(options.mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1);
    connect_options.set_keep_alive_interval(options.keepalive_s);
    connect_options.set_connect_timeout(5);
    connect_options.set_automatic_reconnect(
        static_cast<int>(std::max<int64_t>(1, options.min_retry.count() / 1000)),
        static_cast<int>(std::max<int64_t>(1, options.max_retry.count() / 1000)));
    connect_options.set_max_inflight(options.max_inflight);
    if (options.mqtt_version == 5) {
      connect_options.set_clean_start(options.clean_start);
      ::mqtt::properties props;
      if (options.session_expiry_s > 0) {
        props.add(::mqtt::property(::mqtt::property::SESSION_EXPIRY_INTERVAL,
                                   static_cast<int>(options.session_expiry_s)));
      }
      props.add(::mqtt::property(::mqtt::property::RECEIVE_MAXIMUM, 65535));
      connect_options.set_properties(props);
    } else {
      connect_options.set_clean_session(options.clean_start);
    }
    if (!options.username.empty()) connect_options.set_user_name(options.username);
    if (!options.password.empty()) connect_options.set_password(options.password);
    if (options.will) {
      ::mqtt::message will_msg(options.will->topic, options.will->payload, 1, false);
      if (!options.will->content_type.empty() && options.mqtt_version == 5) {
        ::mqtt::properties p;
        p.add(::mqtt::property(::mqtt::property::CONTENT_TYPE, options.will->content_type));
        will_msg.set_properties(p);
      }
      connect_options.set_will_message(will_msg);
    }
    if (options.tls) {
      ::mqtt::ssl_options ssl;
      if (!options.tls->ca_file.empty()) ssl.set_trust_store(options.tls->ca_file);
      if (!options.tls->cert_file.empty()) ssl.set_key_store(options.tls->cert_file);
      if (!options.tls->key_file.empty()) ssl.set_private_key(options.tls->key_file);
      ssl.set_enable_server_cert_auth(true);
      ssl.set_verify(true);
      connect_options.set_ssl(ssl);
    }

    client->set_callback(*this);
    // A broker that ends the connection with a DISCONNECT of its own (MQTT 5: an administrator's
    // kick, a changed ACL, a session taken over) reaches this handler, not connection_lost; Paho
    // reconnects by itself either way.
    client->set_disconnected_handler([this](const ::mqtt::properties&, ::mqtt::ReasonCode rc) {
      connection_lost("the broker disconnected doppeld (reason code " +
                      std::to_string(static_cast<int>(rc)) + ")");
    });
  }

  // Paho's callbacks, one object for all of them.
  void message_arrived(::mqtt::const_message_ptr msg) override {
    if (!message_handler) return;
    IncomingMessage in;
    in.topic = msg->get_topic();
    in.retained = msg->is_retained();
    in.payload = msg->get_payload_str();
    const auto& props = msg->get_properties();
    if (props.contains(::mqtt::property::CONTENT_TYPE)) {
      in.content_type = ::mqtt::get<std::string>(props, ::mqtt::property::CONTENT_TYPE);
    }
    message_handler(std::move(in));
  }
  void connected(const std::string&) override {
    connected_flag.store(true);
    cv.notify_all();
    if (connected_handler) connected_handler();
  }
  void connection_lost(const std::string& cause) override {
    connected_flag.store(false);
    if (lost_handler) lost_handler(cause.empty() ? "connection lost" : cause);
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() { (void)disconnect(std::chrono::milliseconds(500)); }

void Client::on_message(std::function<void(IncomingMessage&&)> handler) {
  impl_->message_handler = std::move(handler);
}
void Client::on_connected(std::function<void()> handler) {
  impl_->connected_handler = std::move(handler);
}
void Client::on_connection_lost(std::function<void(const std::string&)> handler) {
  impl_->lost_handler = std::move(handler);
}

void Client::on_connect_failed(
    std::function<void(const Status&, std::chrono::milliseconds)> handler) {
  impl_->connect_failed_handler = std::move(handler);
}

Status Client::connect(std::chrono::milliseconds timeout) {
  try {
    auto tok = impl_->client->connect(impl_->connect_options);
    if (!tok->wait_for(timeout)) {
      return Status(StatusCode::kUnavailable, "no answer from " + impl_->options.uri + " within " +
                                                  std::to_string(timeout.count()) + " ms");
    }
    return Status::ok();
  } catch (const ::mqtt::exception& e) {
    return Status(StatusCode::kUnavailable,
                  "cannot connect to " + impl_->options.uri + ": " + e.what());
  }
}

void Client::connect_in_background() {
  if (impl_->connector.joinable()) return;
  impl_->connector = std::thread([this] {
    auto delay = impl_->options.min_retry;
    while (!impl_->closing.load() && !impl_->connected_flag.load()) {
      const Status attempt = connect(std::chrono::seconds(10));
      if (attempt) break;
      if (impl_->connect_failed_handler) impl_->connect_failed_handler(attempt, delay);
      std::unique_lock lock(impl_->mu);
      impl_->cv.wait_for(lock, delay, [this] { return impl_->closing.load(); });
      delay = std::min(delay * 2, impl_->options.max_retry);
    }
  });
}

void Client::subscribe_then(const std::vector<std::string>& filters, int qos,
                            std::function<void(const Status&)> done) {
  SubscribeListener* listener = nullptr;
  {
    std::lock_guard lock(impl_->listeners_mu);
    std::erase_if(impl_->listeners, [](const auto& l) { return l->finished(); });
    listener =
        impl_->listeners.emplace_back(std::make_unique<SubscribeListener>(std::move(done))).get();
  }
  try {
    impl_->client->subscribe(::mqtt::string_collection::create(filters),
                             std::vector<int>(filters.size(), qos), nullptr, *listener);
  } catch (const ::mqtt::exception& e) {
    listener->finish(
        Status(StatusCode::kUnavailable, std::string("subscribe failed: ") + e.what()));
  }
}

Status Client::subscribe(const std::vector<std::string>& filters, int qos,
                         std::chrono::milliseconds timeout) {
  try {
    auto topics = ::mqtt::string_collection::create(filters);
    std::vector<int> qoss(filters.size(), qos);
    auto tok = impl_->client->subscribe(topics, qoss);
    if (timeout.count() == 0) return Status::ok();  // e.g. from a Paho callback: never wait
    if (!tok->wait_for(timeout)) {
      return Status(StatusCode::kUnavailable, "subscribe timed out");
    }
    return granted(*tok);
  } catch (const ::mqtt::exception& e) {
    return Status(StatusCode::kUnavailable, std::string("subscribe failed: ") + e.what());
  }
}

Status Client::publish(const std::string& topic, std::string payload, int qos,
                       const std::string& content_type, bool retained) {
  try {
    auto msg = ::mqtt::make_message(topic, std::move(payload), qos, retained);
    if (!content_type.empty() && impl_->options.mqtt_version == 5) {
      ::mqtt::properties props;
      props.add(::mqtt::property(::mqtt::property::CONTENT_TYPE, content_type));
      msg->set_properties(std::move(props));
    }
    impl_->client->publish(msg);
    return Status::ok();
  } catch (const ::mqtt::exception& e) {
    return Status(StatusCode::kUnavailable, std::string("publish failed: ") + e.what());
  }
}

Status Client::disconnect(std::chrono::milliseconds timeout, bool send_will) {
  impl_->closing.store(true);
  impl_->cv.notify_all();
  if (impl_->connector.joinable()) impl_->connector.join();
  try {
    if (impl_->client->is_connected()) {
      auto opts = ::mqtt::disconnect_options(static_cast<int>(timeout.count()));
      if (send_will && impl_->options.mqtt_version == 5) {
        opts.set_reason_code(::mqtt::ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
      }
      impl_->client->disconnect(opts)->wait_for(timeout + std::chrono::milliseconds(500));
    } else {
      // Stop Paho's automatic reconnect loop as well.
      impl_->client->disconnect(0)->wait_for(std::chrono::milliseconds(200));
    }
  } catch (const ::mqtt::exception&) {
    // Already disconnected: nothing to do.
  }
  impl_->connected_flag.store(false);
  return Status::ok();
}

bool Client::connected() const {
  return impl_->connected_flag.load() && impl_->client->is_connected();
}

bool Client::connected_as_reported() const { return impl_->connected_flag.load(); }

const std::string& Client::client_id() const { return impl_->options.client_id; }

}  // namespace doppel::mqtt
