// Broker faults: the gateway reconnects and re-subscribes by itself, /readyz reflects the outage,
// its persistent session keeps what devices sent while it was away, it waits for a broker that
// is not there yet, and the embedded broker is restarted when it dies.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

int64_t reported_version(Doppeld& gw, const std::string& id) {
  auto r = gw.get("/v1/twins/" + id);
  return r.status == 200 ? r.body["reported_version"].get<int64_t>() : -1;
}

// The embedded Mosquitto: the child doppeld's main thread started (-1 if none).
pid_t embedded_broker_pid(Doppeld& gw) {
  pid_t broker = -1;
  std::ifstream children("/proc/" + std::to_string(gw.pid()) + "/task/" + std::to_string(gw.pid()) +
                         "/children");
  children >> broker;
  return broker;
}

}  // namespace

TEST_CASE("an external broker restart: readyz reflects it, the gateway comes back by itself") {
  Stack stack;
  auto& gw = stack.gateway;
  Process sim = start_sim(stack.broker.uri(), stack.dir.file("sim.log"),
                          {"--devices", "5", "--interval-s", "0.3", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gw.list_all().size() == 5; }, 20s));

  stack.broker.stop();
  REQUIRE(eventually([&] { return gw.get("/readyz").status == 503; }, 10s));
  auto r = gw.get("/readyz");
  CHECK(r.body["detail"].get<std::string>().find("broker is not connected") != std::string::npos);
  CHECK(gw.get("/healthz").status == 200);
  const int64_t before = reported_version(gw, "sim-000000");

  stack.broker.start();  // same port
  CHECK(eventually([&] { return gw.get("/readyz").status == 200; }, 20s));
  // The devices reconnect too; their new reports arrive, so the gateway re-subscribed.
  CHECK(eventually([&] { return reported_version(gw, "sim-000000") > before + 2; }, 20s));
  CHECK(gw.log().find("lost the broker connection") != std::string::npos);
  sim.signal(SIGINT);
  sim.wait_exit(10s);
}

TEST_CASE("reports sent while the gateway is away are delivered from its persistent session") {
  Stack stack;
  auto& gw = stack.gateway;
  TestDevice dev("away-1", stack.broker.uri());
  dev.connect();
  dev.publish("reported", R"({"state":{"n":0}})");
  REQUIRE(eventually([&] { return reported_version(gw, "away-1") == 1; }, 10s));

  gw.kill9();  // the broker keeps the gateway's session and queues for it
  for (int i = 1; i <= 20; ++i) dev.publish("reported", json{{"state", {{"n", i}}}}.dump());
  dev.publish("get", R"({"token":"while-away"})");
  gw.start();
  CHECK(eventually([&] { return reported_version(gw, "away-1") == 21; }, 20s));
  CHECK(gw.get("/v1/twins/away-1").body["reported"]["n"] == 20);
  const auto docs = dev.wait_for("twin", 1);
  REQUIRE(docs.size() == 1);
  CHECK(json::parse(docs[0])["token"] == "while-away");
}

TEST_CASE("a gateway started before its broker waits and connects when it appears") {
  TempDir dir;
  doppel::sim::LocalBroker broker(dir.path().string());  // configured, not started yet
  Doppeld gw(dir.file("data"), broker.uri());
  gw.start_unready();
  CHECK(gw.get("/readyz").status == 503);
  // It has tried and failed to reach the broker, and keeps running and answering.
  REQUIRE(eventually(
      [&] { return metric(gw.text("/metrics"), "doppel_mqtt_connect_failures_total") >= 1; }, 10s));
  CHECK(gw.running());
  CHECK(gw.get("/readyz").status == 503);
  REQUIRE(broker.start());
  CHECK(eventually([&] { return gw.get("/readyz").status == 200; }, 20s));
  TestDevice dev("late-1", broker.uri());
  dev.connect();
  dev.publish("reported", R"({"state":{"ok":true}})");
  CHECK(eventually([&] { return reported_version(gw, "late-1") == 1; }, 10s));
  broker.stop();
}

TEST_CASE("a broker that refuses the gateway's subscriptions: unready, saying why, until allowed") {
  TempDir dir;
  DynsecSetup dynsec(dir);
  // Anonymous clients get the plugin's default access: no subscriptions, no publishes.
  Broker broker(dir, dynsec.broker_config(/*allow_anonymous=*/true));
  broker.start();
  Doppeld gw(dir.file("data"), broker.uri());
  gw.start_unready();
  REQUIRE(
      eventually([&] { return gw.log().find("subscribing failed") != std::string::npos; }, 10s));
  auto r = gw.get("/readyz");
  CHECK(r.status == 503);
  const std::string detail = r.body["detail"].get<std::string>();
  CHECK(detail.find("refused doppeld's subscriptions") != std::string::npos);
  CHECK(detail.find("not connected") == std::string::npos);
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_connected") == 0);

  // The operator gives anonymous clients the rights; Mosquitto's dynamic-security plugin then
  // disconnects them, and doppeld, reconnecting, subscribes again and becomes ready.
  for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
           {"createRole", "devices"},
           {"addRoleACL", "devices", "subscribePattern", "#", "allow"},
           {"addRoleACL", "devices", "publishClientSend", "#", "allow"},
           {"createGroup", "anonymous"},
           {"addGroupRole", "anonymous", "devices"},
           {"setAnonymousGroup", "anonymous"}}) {
    dynsec.control(broker.port(), step);
  }
  REQUIRE(eventually([&] { return gw.get("/readyz").status == 200; }, 30s));
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_connected") == 1);
  // The plugin's disconnect (an MQTT 5 DISCONNECT from the broker) counts as a lost connection.
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_connection_losses_total") >= 1);
  CHECK(gw.log().find("the broker disconnected doppeld") != std::string::npos);
  CHECK(gw.log().find("the broker granted the device topics' subscriptions") != std::string::npos);
  TestDevice dev("allowed-1", broker.uri());
  dev.connect();
  dev.publish("reported", R"({"state":{"ok":true}})");
  CHECK(eventually([&] { return reported_version(gw, "allowed-1") == 1; }, 10s));
}

TEST_CASE("the embedded broker is restarted when it dies, and everyone reconnects") {
  TempDir dir;
  const int port = free_port();
  Doppeld gw(dir.file("data"), "", {"--broker-port", std::to_string(port)});
  gw.start();
  const std::string uri = "tcp://127.0.0.1:" + std::to_string(port);
  Process sim = start_sim(uri, dir.file("sim.log"),
                          {"--devices", "3", "--interval-s", "0.3", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gw.list_all().size() == 3; }, 20s));

  const pid_t broker = embedded_broker_pid(gw);
  REQUIRE(broker > 0);
  ::kill(broker, SIGKILL);
  CHECK(eventually([&] { return gw.log().find("exited unexpectedly") != std::string::npos; }, 10s));
  CHECK(eventually([&] { return gw.get("/readyz").status == 200; }, 30s));
  const int64_t before = reported_version(gw, "sim-000001");
  CHECK(eventually([&] { return reported_version(gw, "sim-000001") > before + 2; }, 30s));
  sim.signal(SIGINT);
  sim.wait_exit(10s);
  CHECK(gw.stop() == 0);
}

TEST_CASE("the embedded broker supervisor keeps restarting with backoff until it succeeds") {
  TempDir dir;
  const int port = free_port();
  Doppeld gw(dir.file("data"), "", {"--broker-port", std::to_string(port)});
  gw.start();
  const std::string conf_path = dir.file("data") + "/mosquitto/mosquitto.conf";
  std::string conf;
  {
    std::ifstream in(conf_path);
    conf.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(!conf.empty());
  // Every restart fails at once while the config is broken (doppeld writes it only at start).
  std::ofstream(conf_path, std::ios::app) << "no_such_option 1\n";
  const pid_t broker = embedded_broker_pid(gw);
  REQUIRE(broker > 0);
  ::kill(broker, SIGKILL);
  // Three failed attempts in a row (0.5 + 1 + 2 s of backoff): it does not give up.
  CHECK(eventually(
      [&] {
        return gw.log().find("restarting the embedded broker failed (attempt 3)") !=
               std::string::npos;
      },
      30s));
  auto r = gw.get("/readyz");
  CHECK(r.status == 503);
  CHECK(r.body["detail"].get<std::string>().find("restarting: attempt") != std::string::npos);
  std::ofstream(conf_path, std::ios::trunc) << conf;  // repaired
  CHECK(eventually([&] { return gw.get("/readyz").status == 200; }, 60s));
  CHECK(gw.log().find("embedded broker restarted") != std::string::npos);
  CHECK(gw.stop() == 0);
}

TEST_CASE("retained device messages replayed on a gateway reconnect change no twin") {
  Stack stack;
  auto& gw = stack.gateway;
  TestDevice dev("ret-1", stack.broker.uri());
  dev.connect();
  dev.publish_topic("twins/ret-1/reported", R"({"state":{"v":"old"}})", /*retained=*/true);
  REQUIRE(eventually([&] { return reported_version(gw, "ret-1") == 1; }, 10s));
  dev.publish("reported", R"({"state":{"v":"new"}})");
  REQUIRE(eventually([&] { return reported_version(gw, "ret-1") == 2; }, 10s));
  // A retained "online" for a device that then went offline.
  TestDevice ghost("ret-2", stack.broker.uri());
  ghost.connect();
  ghost.publish_topic("twins/ret-2/status", R"({"state":"online"})", /*retained=*/true);
  REQUIRE(eventually(
      [&] { return gw.get("/v1/twins/ret-2").body["connection"]["state"] == "online"; }, 10s));
  ghost.publish("status", R"({"state":"offline"})");
  REQUIRE(eventually(
      [&] { return gw.get("/v1/twins/ret-2").body["connection"]["state"] == "offline"; }, 10s));

  CHECK(gw.stop() == 0);
  gw.start();  // re-subscribes: the broker replays both retained messages
  REQUIRE(eventually(
      [&] { return metric(gw.text("/metrics"), "doppel_mqtt_retained_ignored_total") >= 2; }, 10s));
  const json doc = gw.get("/v1/twins/ret-1").body;
  CHECK(doc["reported"]["v"] == "new");
  CHECK(doc["reported_version"] == 2);
  CHECK(gw.get("/v1/twins/ret-2").body["connection"]["state"] == "offline");
}
