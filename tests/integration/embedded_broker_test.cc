// doppeld with no --broker runs its own Mosquitto, serves devices through it, and stops it on
// exit; a second doppeld on the same data directory is refused.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

pid_t child_mosquitto(pid_t parent) {
  std::ifstream children("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) +
                         "/children");
  pid_t pid = -1;
  children >> pid;
  return pid;
}

}  // namespace

TEST_CASE("the embedded broker serves devices and stops with doppeld") {
  TempDir dir;
  const int port = free_port();
  Doppeld gateway(dir.file("data"), "", {"--broker-port", std::to_string(port)});
  gateway.start();
  const pid_t broker = child_mosquitto(gateway.pid());
  REQUIRE(alive(broker));
  CHECK(std::filesystem::exists(dir.file("data/mosquitto/mosquitto.conf")));

  TestDevice dev("emb-1", "tcp://127.0.0.1:" + std::to_string(port));
  dev.connect();
  dev.publish("reported", R"({"state":{"ok":true}})");
  CHECK(eventually([&] { return gateway.get("/v1/twins/emb-1").status == 200; }, 10s));

  Doppeld second(dir.file("data"), "", {"--broker-port", std::to_string(free_port())});
  Process again(
      {DOPPELD_PATH, "--data", dir.file("data"), "--http",
       "127.0.0.1:" + std::to_string(free_port()), "--broker-port", std::to_string(free_port())},
      dir.file("second.log"));
  int status = 0;
  REQUIRE(again.wait_exit(10s, &status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(again.log().find("another doppeld is using") != std::string::npos);

  CHECK(gateway.stop() == 0);
  CHECK(eventually([&] { return !alive(broker); }, 5s));
}

TEST_CASE("doppeld refuses a port that is taken and says what to do") {
  TempDir dir;
  Broker broker(dir);
  Process p(
      {DOPPELD_PATH, "--data", dir.file("data"), "--http",
       "127.0.0.1:" + std::to_string(free_port()), "--broker-port", std::to_string(broker.port())},
      dir.file("d.log"));
  int status = 0;
  REQUIRE(p.wait_exit(10s, &status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(p.log().find("--broker-port") != std::string::npos);
}

TEST_CASE("the embedded broker says when a device connects and disconnects: no birth, no will") {
  TempDir dir;
  const int port = free_port();
  Doppeld gateway(dir.file("data"), "", {"--broker-port", std::to_string(port)});
  gateway.start();
  REQUIRE(gateway.request("PUT", "/v1/twins/quiet-1", "{}").status == 201);
  REQUIRE(gateway.request("PATCH", "/v1/twins/quiet-1/desired", R"({"mode":"eco"})").status == 200);
  const auto state = [&](const std::string& id) {
    auto r = gateway.get("/v1/twins/" + id);
    return r.status == 200 ? r.body["connection"]["state"].get<std::string>() : "";
  };
  CHECK(state("quiet-1") == "unknown");
  {
    // A client that is no twin: the broker's notice of it creates none.
    // (Client id = device id, as doppel-sim's devices and --device-auth's make it: the broker
    // names clients by their client id.)
    TestDevice stranger("stranger-1", "tcp://127.0.0.1:" + std::to_string(port),
                        doppel::twins::Encoding::kJson, "twins", {"stranger-1", "", ""});
    stranger.connect();
    TestDevice dev("quiet-1", "tcp://127.0.0.1:" + std::to_string(port),
                   doppel::twins::Encoding::kJson, "twins", {"quiet-1", "", ""});
    dev.connect();  // and subscribes; it says nothing
    CHECK(eventually([&] { return state("quiet-1") == "online"; }, 10s));
    // What it is owed goes out with its first message, once it has subscribed.
    CHECK(dev.received("delta").empty());
    dev.publish("reported", R"({"state":{"mode":"normal"}})");
    CHECK(dev.wait_for("delta", 1).size() == 1);
    CHECK(gateway.get("/v1/twins/stranger-1").status == 404);
  }
  // Both disconnected without a will: the broker's plugin says so.
  CHECK(eventually([&] { return state("quiet-1") == "offline"; }, 10s));
  CHECK(gateway.get("/v1/twins/stranger-1").status == 404);
  auto events = gateway.get("/v1/events?twin=quiet-1&kind=connection.changed").body["events"];
  REQUIRE(events.size() == 2);
  CHECK(events[0]["state"] == "online");
  CHECK(events[0]["previous"] == "unknown");
  CHECK(events[1]["state"] == "offline");
  const std::string metrics = gateway.text("/metrics");
  CHECK(metrics.find("doppel_broker_connects_total 2") != std::string::npos);
}

TEST_CASE("doppeld's own connections are no devices: the broker's word of them is not presence") {
  TempDir dir;
  const int port = free_port();
  Doppeld gateway(dir.file("data"), "", {"--broker-port", std::to_string(port)});
  gateway.start();
  // Twins named like doppeld's connections (its session, and its two batch connections').
  for (const char* id :
       {"doppel-gateway", "doppel-gateway-qos0", "doppel-gateway-bulk", "plain-1"}) {
    REQUIRE(gateway.request("PUT", std::string("/v1/twins/") + id, "{}").status == 201);
  }
  const auto state = [&](const std::string& id) {
    auto r = gateway.get("/v1/twins/" + id);
    return r.status == 200 ? r.body["connection"]["state"].get<std::string>() : "";
  };
  // What the broker's plugin publishes when a connection ends, for each of them.
  TestDevice reporter("presence-reporter", "tcp://127.0.0.1:" + std::to_string(port),
                      doppel::twins::Encoding::kJson, "twins", {"presence-reporter", "", ""});
  reporter.connect();
  for (const char* id :
       {"doppel-gateway", "doppel-gateway-qos0", "doppel-gateway-bulk", "plain-1"}) {
    reporter.publish_topic(std::string("$doppel/presence/") + id, "offline");
  }
  // The device's goes through; the channel reads them in order, so by then it has seen the
  // others, and counted none of them.
  CHECK(eventually([&] { return state("plain-1") == "offline"; }, 10s));
  CHECK(metric(gateway.text("/metrics"), "doppel_broker_disconnects_total") == 1);
  CHECK(state("doppel-gateway") == "unknown");
  CHECK(state("doppel-gateway-qos0") == "unknown");
  CHECK(state("doppel-gateway-bulk") == "unknown");
}
