// Overload at the broker is not silent: when a client's queue at the broker overflows and the
// broker drops messages, doppeld counts them from the broker's $SYS drop counter (broker-wide),
// logs a warning and reports itself degraded in /readyz. The overflow is made deterministic with
// an offline persistent session and a broker queue of ten messages.
#include <doctest/doctest.h>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("dropped messages are counted, logged and make /readyz degraded") {
  TempDir dir;
  Broker broker(dir, {"max_queued_messages 10", "sys_interval 1"});
  Doppeld gw(dir.file("data"), broker.uri());
  gw.start();
  CHECK(gw.get("/readyz").body["status"] == "ready");
  CHECK(metric(gw.text("/metrics"), "doppel_broker_dropped_messages_total") == 0);

  {  // A subscriber with a persistent session goes away; its queue holds ten messages.
    doppel::mqtt::ClientOptions o;
    o.uri = broker.uri();
    o.client_id = "slow-consumer";
    o.clean_start = false;
    o.session_expiry_s = 3600;
    doppel::mqtt::Client away(o);
    REQUIRE(away.connect(5s));
    REQUIRE(away.subscribe({"backlog/#"}, 1));
    REQUIRE(away.disconnect(2s));
  }
  TestDevice publisher("pub-1", broker.uri());
  publisher.connect();
  for (int i = 0; i < 60; ++i) publisher.publish_topic("backlog/x", std::to_string(i));

  REQUIRE(eventually(
      [&] { return metric(gw.text("/metrics"), "doppel_broker_dropped_messages_total") >= 50; },
      20s));
  auto ready = gw.get("/readyz");
  CHECK(ready.status == 200);  // still serving: degraded, not down
  CHECK(ready.body["status"] == "degraded");
  CHECK(ready.body["detail"].get<std::string>().find("dropping") != std::string::npos);
  CHECK(metric(gw.text("/metrics"), "doppel_broker_dropping") == 1);
  CHECK(gw.log().find("the broker dropped") != std::string::npos);
}
