// BatchPublisher: the QoS 0 answers' own connection (mqtt/batch_publisher.h) — its wire format
// byte for byte, and against a real Mosquitto: everything published arrives, in order; it
// refuses while the broker is gone and reconnects by itself when it is back.
#include <doctest/doctest.h>

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

  const std::string connect = wire::connect_packet("gw-qos0", "u", "p", 30);
  // 0x10, length, "MQTT", level 4, flags (user, password, clean session), keepalive 30, then
  // the client id, username and password, each with its length.
  CHECK(connect == std::string("\x10\x19\x00\x04MQTT\x04\xc2\x00\x1e"
                               "\x00\x07gw-qos0\x00\x01u\x00\x01p",
                               27));
}

TEST_CASE("everything published reaches a subscriber in order; it reconnects by itself") {
  TempDir dir;
  Broker broker(dir);
  broker.start();
  BatchPublisherOptions o;
  o.port = broker.port();
  o.client_id = "gw-qos0";
  BatchPublisher publisher(o);
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
