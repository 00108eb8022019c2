// BatchPublisher: doppeld's publishes on a connection of their own (mqtt/batch_publisher.h) —
// its wire format byte for byte; against a real Mosquitto: everything published arrives, in
// order, at QoS 0 and 1, and every QoS 1 message is acknowledged; it refuses while the broker is
// gone and reconnects by itself when it is back; and against a broker that acknowledges only some
// of them before the connection ends: the others are handed back, in order; and relayed through
// doppeld's broker plugin: in order, from the relay user only.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "mqtt/batch_publisher.h"
#include "mqtt/mqtt311.h"
#include "tests/support/harness.h"

using doppel::mqtt::BatchPublisher;
using doppel::mqtt::BatchPublisherOptions;
using namespace doppel::testing;

TEST_CASE("a QoS 0 PUBLISH and a CONNECT, byte for byte (MQTT 3.1.1)") {
  namespace wire = doppel::mqtt::mqtt311;
  std::string out;
  wire::append_publish(out, "a/b", "hi");
  CHECK(out == std::string("\x30\x07\x00\x03"
                           "a/bhi",
                           9));
  // QoS 1 carries a packet id after the topic.
  out.clear();
  wire::append_publish(out, "a/b", "hi", 1, 0x0102);
  CHECK(out == std::string("\x32\x09\x00\x03"
                           "a/b\x01\x02hi",
                           11));
  // A remaining length over 127 takes two bytes: 2 + 3 + 200 = 205 = 0xCD 0x01.
  out.clear();
  wire::append_publish(out, "a/b", std::string(200, 'x'));
  REQUIRE(out.size() == 1 + 2 + 205);
  CHECK(static_cast<unsigned char>(out[1]) == 0xCD);
  CHECK(static_cast<unsigned char>(out[2]) == 0x01);

  // What the broker sends back, one whole packet at a time: a PUBACK for id 0x0102, then a
  // PINGRESP split across two reads.
  int type = 0;
  std::string_view body;
  const std::string acks("\x40\x02\x01\x02\xd0", 5);
  REQUIRE(wire::next_packet(acks, &type, &body) == 4);
  CHECK(type == 4);
  CHECK(wire::puback_id(body) == 0x0102);
  CHECK(wire::next_packet(std::string_view(acks).substr(4), &type, &body) == 0);  // incomplete
  CHECK(wire::next_packet(std::string_view("\xd0\x00", 2), &type, &body) == 2);
  CHECK(type == 13);
  CHECK(body.empty());
  // A remaining length of more than four bytes is no MQTT.
  CHECK(wire::next_packet(std::string_view("\x40\xff\xff\xff\xff\x01", 6), &type, &body) ==
        wire::kMalformed);
  CHECK(wire::puback_id("\x01") == -1);

  const std::string connect = wire::connect_packet("gw-qos0", "u", "p", 30);
  // 0x10, length, "MQTT", level 4, flags (user, password, clean session), keepalive 30, then
  // the client id, username and password, each with its length.
  CHECK(connect == std::string("\x10\x19\x00\x04MQTT\x04\xc2\x00\x1e"
                               "\x00\x07gw-qos0\x00\x01u\x00\x01p",
                               27));
}

namespace {

// A Mosquitto of the test's own.
struct WithBroker {
  WithBroker() { broker.start(); }
  BatchPublisherOptions options(std::string client_id) const {
    BatchPublisherOptions o;
    o.port = broker.port();
    o.client_id = std::move(client_id);
    return o;
  }
  TempDir dir;
  Broker broker{dir};
};

}  // namespace

TEST_CASE_FIXTURE(WithBroker,
                  "everything published reaches a subscriber in order; it reconnects by itself") {
  BatchPublisher publisher(options("gw-qos0"));
  CHECK(!publisher.publish("replies/x", "too early"));  // not connected yet: refused
  publisher.start();
  REQUIRE(eventually([&] { return publisher.connected(); }, 10s));

  constexpr int kCount = 2000;
  {
    TestDevice sub("sub-1", broker.uri());
    sub.connect();
    sub.subscribe("replies/#");
    for (int i = 0; i < kCount; ++i) REQUIRE(publisher.publish("replies/x", std::to_string(i)));
    const auto got = sub.wait_on("replies/x", kCount);
    REQUIRE(got.size() == kCount);
    for (int i = 0; i < kCount; ++i) CHECK(got[static_cast<size_t>(i)] == std::to_string(i));
    CHECK(publisher.batches() >= 1);
  }

  // The broker goes away: publishes are refused (the caller sends them another way).
  broker.stop();
  CHECK(eventually([&] { return !publisher.connected(); }, 20s));
  CHECK(!publisher.publish("replies/x", "lost"));
  // ... and comes back: the publisher reconnects without being asked.
  broker.start();
  REQUIRE(eventually([&] { return publisher.connected(); }, 20s));
  TestDevice sub("sub-2", broker.uri());
  sub.connect();
  sub.subscribe("replies/#");
  REQUIRE(publisher.publish("replies/y", "back"));
  CHECK(sub.wait_on("replies/y", 1) == std::vector<std::string>{"back"});
  publisher.stop(std::chrono::milliseconds(1000));
  CHECK(!publisher.connected());
}

TEST_CASE_FIXTURE(WithBroker,
                  "QoS 1: every message arrives in order and the broker acknowledges each one") {
  BatchPublisher publisher(options("gw-batch-q1"));
  publisher.start();
  REQUIRE(eventually([&] { return publisher.connected(); }, 10s));
  TestDevice sub("sub-q1", broker.uri());
  sub.connect();
  sub.subscribe("deltas/#");
  constexpr int kCount = 3000;
  for (int i = 0; i < kCount; ++i) {
    // QoS 0 and 1 interleaved on the one connection keep their order.
    REQUIRE(publisher.publish("deltas/x", std::to_string(i), i % 3 == 0 ? 0 : 1));
  }
  const auto got = sub.wait_on("deltas/x", kCount);
  REQUIRE(got.size() == kCount);
  for (int i = 0; i < kCount; ++i) CHECK(got[static_cast<size_t>(i)] == std::to_string(i));
  // The PUBACKs are read (at the latest at the writer's next turn, within a second).
  CHECK(eventually([&] { return publisher.unacked() == 0; }, 10s));
  publisher.stop(std::chrono::milliseconds(1000));
}

namespace {

// A broker that accepts one connection, acknowledges the first `acks` QoS 1 PUBLISHes it gets,
// and closes the connection once it has read `reads` of them.
class StingyBroker {
 public:
  StingyBroker(int acks, int reads) : acks_(acks), reads_(reads) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::listen(fd_, 1) == 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~StingyBroker() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::string> published() {
    std::lock_guard lock(mu_);
    return published_;
  }

 private:
  void serve() {
    const int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    namespace wire = doppel::mqtt::mqtt311;
    std::string in;
    int publishes = 0;
    char buffer[4096];
    while (publishes < reads_) {
      const ssize_t n = ::recv(c, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      in.append(buffer, static_cast<size_t>(n));
      int type = 0;
      std::string_view body;
      size_t used = 0;
      while (publishes < reads_ && (used = wire::next_packet(in, &type, &body)) > 0 &&
             used != wire::kMalformed) {
        if (type == 1) {  // CONNECT: accepted
          (void)wire::write_all(c, "\x20\x02\x00\x00", 4);
        } else if (type == 3) {  // PUBLISH at QoS 1: topic, packet id, payload
          const size_t topic_len =
              (static_cast<unsigned char>(body[0]) << 8) | static_cast<unsigned char>(body[1]);
          const std::string_view id = body.substr(2 + topic_len, 2);
          {
            std::lock_guard lock(mu_);
            published_.emplace_back(body.substr(2 + topic_len + 2));
          }
          if (++publishes <= acks_) {
            const std::string ack = std::string("\x40\x02", 2) + std::string(id);
            (void)wire::write_all(c, ack.data(), ack.size());
          }
        }
        in.erase(0, used);
      }
    }
    ::close(c);
  }

  int fd_ = -1;
  int port_ = 0;
  const int acks_;
  const int reads_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> published_;
};

}  // namespace

TEST_CASE("QoS 1 messages the broker did not acknowledge are handed back, in order") {
  // Acknowledges 2 of 5, then the connection ends: 3, 4 and 5 come back (and only they).
  StingyBroker broker(2, 5);
  std::mutex mu;
  std::vector<std::string> back;
  BatchPublisherOptions o;
  o.port = broker.port();
  o.client_id = "gw-stingy";
  o.handback = [&](std::vector<doppel::mqtt::Unacknowledged> messages) {
    std::lock_guard lock(mu);
    for (auto& m : messages) {
      CHECK(m.topic == "t/x");
      back.push_back(std::move(m.payload));
    }
  };
  BatchPublisher publisher(o);
  publisher.start();
  REQUIRE(eventually([&] { return publisher.connected(); }, 10s));
  // One at a time, so that the PUBACKs of the first two are read before the end (each publish
  // wakes the writer, which reads what the broker sent after writing).
  for (int i = 1; i <= 5; ++i) {
    REQUIRE(publisher.publish("t/x", std::to_string(i), 1));
    if (i <= 2) REQUIRE(eventually([&] { return publisher.unacked() == 0; }, 10s));
  }
  REQUIRE(eventually(
      [&] {
        std::lock_guard lock(mu);
        return back.size() >= 3;
      },
      10s));
  CHECK(broker.published() == std::vector<std::string>{"1", "2", "3", "4", "5"});
  {
    std::lock_guard lock(mu);
    CHECK(back == std::vector<std::string>{"3", "4", "5"});
  }
  CHECK(publisher.unacked() == 0);
  publisher.stop(std::chrono::milliseconds(0));
}

namespace {

// A Mosquitto that loads doppeld's broker plugin and lets `relayer` relay.
struct WithRelayBroker {
  static std::vector<std::string> config() {
    const auto plugin =
        std::filesystem::path(DOPPELD_PATH).parent_path() / "doppel_broker_plugin.so";
    REQUIRE_MESSAGE(std::filesystem::exists(plugin), (plugin.string() + " is not built"));
    return {"plugin " + plugin.string(), "plugin_opt_relay_user relayer"};
  }
  BatchPublisherOptions options(std::string client_id, std::string username) const {
    BatchPublisherOptions o;
    o.port = broker.port();
    o.client_id = std::move(client_id);
    o.username = std::move(username);
    o.relay_topic = std::string(doppel::mqtt::kRelayTopic);
    o.max_relay_bytes = 4096;  // several relay packets per batch below
    return o;
  }
  TempDir dir;
  Broker broker{dir, config()};
  WithRelayBroker() { broker.start(); }
};

}  // namespace

TEST_CASE("a relay record, byte for byte") {
  std::string out;
  doppel::mqtt::append_relay_record(out, "a/b", "hi");
  CHECK(out == std::string("\x00\x03"
                           "a/b\x00\x00\x00\x02hi",
                           11));
}

TEST_CASE_FIXTURE(WithRelayBroker,
                  "relayed through the broker plugin: every QoS 0 message arrives, in order; "
                  "nobody else may relay, and a bad record ends its relay without harm") {
  BatchPublisher publisher(options("gw-relay", "relayer"));
  publisher.start();
  REQUIRE(eventually([&] { return publisher.connected(); }, 10s));
  TestDevice sub("sub-relay", broker.uri());
  sub.connect();
  sub.subscribe("answers/#");

  constexpr int kCount = 3000;
  for (int i = 0; i < kCount; ++i) {
    REQUIRE(publisher.publish("answers/" + std::to_string(i % 3), std::to_string(i)));
  }
  // And a QoS 1 message: a PUBLISH of its own, as without the relay.
  REQUIRE(publisher.publish("answers/q1", "acknowledged", 1));
  for (int t = 0; t < 3; ++t) {
    const std::string topic = "answers/" + std::to_string(t);
    const auto got = sub.wait_on(topic, kCount / 3);
    REQUIRE(got.size() == kCount / 3);
    for (int k = 0; k < kCount / 3; ++k) {
      CHECK(got[static_cast<size_t>(k)] == std::to_string(k * 3 + t));
    }
  }
  CHECK(sub.wait_on("answers/q1", 1) == std::vector<std::string>{"acknowledged"});
  CHECK(eventually([&] { return publisher.unacked() == 0; }, 10s));

  // Another user's relay is refused by the plugin, and the broker ends that connection. The
  // refused relay was handled before the disconnection; a relay of the gateway's after it comes
  // through the same queue in the broker, so once that one has arrived the forged one never will.
  {
    BatchPublisher other(options("not-the-gateway", "someone-else"));
    other.start();
    REQUIRE(eventually([&] { return other.connected(); }, 10s));
    REQUIRE(other.publish("answers/forged", "no"));
    const auto ended = [&] {
      const std::string log = broker.process().log();
      const size_t connected = log.find("as not-the-gateway");
      return connected != std::string::npos &&
             log.find("not-the-gateway", connected + 20) != std::string::npos;
    };
    CHECK(eventually(ended, 10s));
    REQUIRE(publisher.publish("answers/marker", "after the forged one"));
    CHECK(sub.wait_on("answers/marker", 1).size() == 1);
    CHECK(sub.received_on("answers/forged").empty());
    other.stop(std::chrono::milliseconds(0));
  }

  // Relays that go wrong half-way: a record under $ (other than $aws/) and a record cut short.
  // What came before is published, nothing from there on, and the broker keeps relaying.
  {
    sub.subscribe("$doppel/presence/#");
    std::string dollar;
    doppel::mqtt::append_relay_record(dollar, "answers/whole", "first");
    doppel::mqtt::append_relay_record(dollar, "$doppel/presence/dev-1", "offline");
    doppel::mqtt::append_relay_record(dollar, "answers/after", "never");
    std::string cut;
    doppel::mqtt::append_relay_record(cut, "answers/whole", "second");
    doppel::mqtt::append_relay_record(cut, "answers/cut", "never");
    cut.resize(cut.size() - 3);
    for (const std::string& records : {dollar, cut}) {
      BatchPublisherOptions raw = options("gw-relay-raw", "relayer");
      raw.relay_topic.clear();  // the records go as they are, as one PUBLISH
      BatchPublisher writer(raw);
      writer.start();
      REQUIRE(eventually([&] { return writer.connected(); }, 10s));
      REQUIRE(writer.publish(doppel::mqtt::kRelayTopic, records, 1));
      writer.stop(std::chrono::milliseconds(1000));
    }
    CHECK(sub.wait_on("answers/whole", 2) == std::vector<std::string>{"first", "second"});
    REQUIRE(publisher.publish("answers/later", "still relayed"));
    CHECK(sub.wait_on("answers/later", 1) == std::vector<std::string>{"still relayed"});
    CHECK(sub.received_on("$doppel/presence/dev-1").empty());
    CHECK(sub.received_on("answers/after").empty());
    CHECK(sub.received_on("answers/cut").empty());
  }
  publisher.stop(std::chrono::milliseconds(1000));
}
