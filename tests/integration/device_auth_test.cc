// Per-device credentials on the embedded broker: a device reaches only its own twin's topics, a
// wrong password is refused, and deprovisioning revokes access.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

std::string provision(Doppeld& gw, const std::string& id) {
  auto r = gw.request("PUT", "/v1/twins/" + id, R"({"credentials": true})");
  REQUIRE_MESSAGE(r.status == 201, r.body.dump());
  REQUIRE(r.body["credentials"]["username"] == id);
  return r.body["credentials"]["password"].get<std::string>();
}

// doppeld with --device-auth and its embedded broker on a free port, started (the password,
// ACL and CRL files: gateway/device_auth.h).
struct AuthGateway {
  AuthGateway()
      : port(free_port()),
        uri("tcp://127.0.0.1:" + std::to_string(port)),
        gw(dir.file("data"), "", {"--broker-port", std::to_string(port), "--device-auth"}) {
    gw.start();
  }
  TempDir dir;
  int port;
  std::string uri;
  Doppeld gw;
};

// doppeld with --device-auth and an external broker whose dynamic-security plugin keeps the
// accounts (gateway/broker_accounts.h), as the nodes of a cluster use it.
struct BrokerAccountsGateway {
  BrokerAccountsGateway() : gw(dir.file("data"), broker.uri(), dynsec.gateway_args()) {
    gw.start();
  }
  TempDir dir;
  DynsecSetup dynsec{dir};
  Broker broker{dir, dynsec.broker_config()};
  std::string uri = broker.uri();
  Doppeld gw;
};

}  // namespace

// The DeviceCredentials port, over both of its implementations.
TEST_CASE_TEMPLATE("with --device-auth each device reaches only its own twin", Auth, AuthGateway,
                   BrokerAccountsGateway) {
  Auth auth;
  Doppeld& gw = auth.gw;
  const std::string uri = auth.uri;

  const std::string pa = provision(gw, "dev-a");
  const std::string pb = provision(gw, "dev-b");
  CHECK(pa != pb);
  CHECK(pa.size() >= 20);
  // The password is shown once: not in the twin document, not on disk in clear.
  CHECK(!gw.get("/v1/twins/dev-a").body.contains("credentials"));
  CHECK(gw.log().find(pa) == std::string::npos);

  TestDevice a("dev-a", uri, doppel::twins::Encoding::kJson, "twins", {"dev-a", pa, ""});
  TestDevice b("dev-b", uri, doppel::twins::Encoding::kJson, "twins", {"dev-b", pb, ""});
  a.connect();
  b.connect();

  // Its own topics work.
  a.publish("reported", R"({"state":{"owner":"a"}})");
  REQUIRE(
      eventually([&] { return gw.get("/v1/twins/dev-a").body["reported"]["owner"] == "a"; }, 10s));

  // Publishing as B is dropped by the broker; B's twin is untouched.
  a.publish_topic("twins/dev-b/reported", R"({"state":{"owner":"forged by a"}})");
  a.publish_topic("twins/dev-c/reported", R"({"state":{"owner":"a"}})");
  b.publish("reported", R"({"state":{"owner":"b"}})");
  REQUIRE(
      eventually([&] { return gw.get("/v1/twins/dev-b").body["reported"]["owner"] == "b"; }, 10s));
  CHECK(gw.get("/v1/twins/dev-b").body["reported"]["owner"] == "b");
  CHECK(gw.get("/v1/twins/dev-c").status == 404);

  // Reading B's topics yields nothing: Mosquitto grants the subscription but its ACL filters
  // every delivery (the dynamic-security plugin refuses it), so B's delta reaches only B.
  (void)a.try_subscribe("twins/dev-b/#");
  (void)a.try_subscribe("twins/#");
  REQUIRE(gw.patch_desired("dev-b", {{"secret", 42}}).status == 200);
  REQUIRE(b.wait_for("delta", 1).size() == 1);
  REQUIRE(gw.patch_desired("dev-a", {{"own", 1}}).status == 200);
  // A's own delta arrives (twice: A's filters overlap) after B's was sent...
  REQUIRE(!a.wait_for("delta", 1).empty());
  CHECK(a.received_on("twins/dev-b/delta").empty());  // ...and B's never did
  CHECK(a.messages_outside_own_topics() == 0);
  // A job's delta leaves on doppeld's third connection (rollouts'), with its own account: it
  // reaches B as well.
  REQUIRE(gw.request("POST", "/v1/jobs",
                     R"({"id": "auth-job", "target": {"twins": ["dev-b"]},
                         "action": {"desired": {"via": "job"}}})")
              .status == 201);
  REQUIRE(eventually(
      [&] {
        for (const std::string& d : b.received("delta")) {
          if (d.find("\"via\"") != std::string::npos) return true;
        }
        return false;
      },
      10s));

  // Wrong passwords and anonymous clients are refused.
  TestDevice wrong("dev-a", uri, doppel::twins::Encoding::kJson, "twins", {"dev-a", "nope", ""});
  CHECK(!wrong.try_connect());
  TestDevice anonymous("anon", uri);
  CHECK(!anonymous.try_connect());
  TestDevice impostor("dev-b", uri, doppel::twins::Encoding::kJson, "twins", {"dev-b", pa, ""});
  CHECK(!impostor.try_connect());

  // Deprovisioning revokes: the connected device is dropped and cannot come back.
  CHECK(gw.request("DELETE", "/v1/twins/dev-a").status == 204);
  CHECK(eventually([&] { return !a.connected(); }, 10s));
  TestDevice again("dev-a", uri, doppel::twins::Encoding::kJson, "twins", {"dev-a", pa, ""});
  CHECK(!again.try_connect());
  // B is unaffected.
  b.publish("reported", R"({"state":{"still":"here"}})");
  CHECK(eventually([&] { return gw.get("/v1/twins/dev-b").body["reported"]["still"] == "here"; },
                   10s));

  // A new PUT with credentials replaces the password.
  const std::string pb2 = provision(gw, "dev-b2");
  auto rotated = gw.request("PUT", "/v1/twins/dev-b2", R"({"credentials": true})");
  REQUIRE(rotated.status == 200);
  TestDevice old_pw("dev-b2", uri, doppel::twins::Encoding::kJson, "twins", {"dev-b2", pb2, ""});
  CHECK(!old_pw.try_connect());
}

TEST_CASE("credentials are refused without --device-auth") {
  Stack stack;
  auto r = stack.gateway.request("PUT", "/v1/twins/x", R"({"credentials": true})");
  CHECK(r.status == 400);
  CHECK(r.body["detail"].get<std::string>().find("--device-auth") != std::string::npos);
  CHECK(stack.gateway.get("/v1/twins/x").status == 404);
  auto bad = stack.gateway.request("PUT", "/v1/twins/x", R"({"credentials": "yes"})");
  CHECK(bad.status == 400);
}

TEST_CASE("a device cannot take over the gateway's or another device's client id") {
  AuthGateway auth;
  auto& [dir, port, uri, gw] = auth;
  const std::string pa = provision(gw, "dev-a");
  const std::string pb = provision(gw, "dev-b");
  TestDevice b("dev-b", uri, doppel::twins::Encoding::kJson, "twins", {"dev-b", pb, ""});
  b.connect();
  b.publish("status", R"({"state":"online"})");
  REQUIRE(eventually(
      [&] { return gw.get("/v1/twins/dev-b").body["connection"]["state"] == "online"; }, 10s));

  // dev-a's valid credentials, asking for someone else's client id: the broker gives it its
  // own id (its username), so neither the gateway nor dev-b is disconnected.
  for (const char* stolen : {"doppel-gateway", "dev-b"}) {
    doppel::mqtt::ClientOptions o;
    o.uri = uri;
    o.client_id = stolen;
    o.username = "dev-a";
    o.password = pa;
    doppel::mqtt::Client thief(o);
    CHECK(thief.connect(5s));
    // A takeover happens before the broker acknowledges the thief's CONNECT. A round trip after
    // it — dev-b reports, the gateway records it — shows that both sessions outlived it.
    const std::string probe = std::string("after-") + stolen;
    b.publish("reported", json{{"state", {{"probe", probe}}}}.dump());
    CHECK(eventually([&] { return gw.get("/v1/twins/dev-b").body["reported"]["probe"] == probe; },
                     10s));
    CHECK(b.connected());
    (void)thief.disconnect(1s);
  }
  CHECK(gw.get("/readyz").status == 200);
  // doppeld's second connection has an account of its own: it takes over no session.
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_batch_connected") == 1);
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_bulk_connected") == 1);
  CHECK(metric(gw.text("/metrics"), "doppel_mqtt_connection_losses_total") == 0);
  CHECK(gw.get("/v1/twins/dev-b").body["connection"]["state"] == "online");
  // The gateway still hears dev-b: its session was not taken.
  b.publish("reported", R"({"state":{"after":"attempt"}})");
  CHECK(eventually([&] { return gw.get("/v1/twins/dev-b").body["reported"]["after"] == "attempt"; },
                   10s));
}

TEST_CASE("credentials: refused ids change nothing, false revokes, files are owner-only") {
  AuthGateway auth;
  auto& [dir, port, uri, gw] = auth;
  // The gateway's own account: 400, and no twin appears.
  auto gwacct = gw.request("PUT", "/v1/twins/doppel-gateway", R"({"credentials": true})");
  CHECK(gwacct.status == 400);
  CHECK(gwacct.body["type"] == "urn:doppel:problem:invalid_id");
  CHECK(gw.get("/v1/twins/doppel-gateway").status == 404);
  // ':' is valid in an id, but Mosquitto's password file cannot hold it in a username.
  auto colon = gw.request("PUT", "/v1/twins/site:dev-1", R"({"credentials": true})");
  CHECK(colon.status == 400);
  CHECK(colon.body["detail"].get<std::string>().find("':'") != std::string::npos);
  CHECK(gw.get("/v1/twins/site:dev-1").status == 404);

  // {"credentials": false} revokes.
  const std::string pw = provision(gw, "dev-r");
  TestDevice before("dev-r", uri, doppel::twins::Encoding::kJson, "twins", {"dev-r", pw, ""});
  REQUIRE(before.try_connect());
  auto off = gw.request("PUT", "/v1/twins/dev-r", R"({"credentials": false})");
  CHECK(off.status == 200);
  CHECK(!off.body.contains("credentials"));
  TestDevice after("dev-r", uri, doppel::twins::Encoding::kJson, "twins", {"dev-r", pw, ""});
  CHECK(!after.try_connect());
  // Both are in the twin's change feed, caused by the API.
  auto feed = gw.get("/v1/events?twin=dev-r&kind=credentials.changed");
  REQUIRE(feed.status == 200);
  const auto& events = feed.body["events"];
  REQUIRE(events.size() == 2);
  CHECK(events[0]["credential"] == "password");
  CHECK(events[0]["action"] == "issued");
  CHECK(events[1]["action"] == "revoked");
  CHECK(events[1]["count"] == 1);
  CHECK(events[1]["cause"]["source"] == "api");
  // Deleting the twin revokes what it has left (nothing now): no further credential event.
  REQUIRE(gw.request("DELETE", "/v1/twins/dev-r").status == 204);
  CHECK(gw.get("/v1/events?twin=dev-r&kind=credentials.changed").body["events"].size() == 2);

  namespace fs = std::filesystem;
  const auto mode = [](const std::string& p) {
    return fs::status(p).permissions() & (fs::perms::group_all | fs::perms::others_all);
  };
  CHECK(mode(dir.file("data")) == fs::perms::none);
  CHECK(mode(dir.file("data") + "/doppel.db") == fs::perms::none);
}

TEST_CASE("--device-auth with an external broker: what it needs, and an account without rights") {
  TempDir dir;
  DynsecSetup dynsec{dir};
  Broker broker{dir, dynsec.broker_config()};
  SUBCASE("certificates need the embedded broker") {
    auto args = dynsec.gateway_args();
    args[0] = "--device-auth=x509";
    Doppeld gw(dir.file("data"), broker.uri(), args);
    gw.start_expecting_exit();
    CHECK(gw.log().find("needs the embedded broker") != std::string::npos);
  }
  SUBCASE("the plugin's admin account is required") {
    Doppeld gw(dir.file("data"), broker.uri(), {"--device-auth"});
    gw.start_expecting_exit();
    CHECK(gw.log().find("--broker-username and --broker-password") != std::string::npos);
  }
  SUBCASE("a wrong password for it is reported, not retried forever") {
    Doppeld gw(dir.file("data"), broker.uri(),
               {"--device-auth", "--broker-username", dynsec.username, "--broker-password",
                "not-the-password"});
    gw.start_expecting_exit(60s);
    CHECK(gw.log().find("cannot reach the broker") != std::string::npos);
  }
}
