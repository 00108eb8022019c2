// The embedded broker serves MQTT over TLS; the gateway and the simulator connect with a
// throwaway CA made with openssl; clients without the CA, or without TLS, are refused.
#include <doctest/doctest.h>

#include <signal.h>

#include <cstdlib>

#include "tests/support/harness.h"

using namespace doppel::testing;

namespace {

void make_ca_and_server_cert(const TempDir& dir) {
  const std::string d = dir.path().string();
  const std::string cmd =
      "cd " + d + " && " +
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
      "-subj /CN=doppel-test-ca >/dev/null 2>&1 && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=127.0.0.1 >/dev/null 2>&1 && "
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out server.pem -days 1 -extfile san.ext >/dev/null 2>&1 && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 1 "
      "-subj /CN=someone-else >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "openssl failed");
}

}  // namespace

TEST_CASE("gateway and simulated devices speak MQTT over TLS to the embedded broker") {
  TempDir dir;
  make_ca_and_server_cert(dir);
  const int port = free_port();
  const std::string uri = "ssl://127.0.0.1:" + std::to_string(port);
  Doppeld gw(dir.file("data"), "",
             {"--broker-port", std::to_string(port), "--broker-tls-cert", dir.file("server.pem"),
              "--broker-tls-key", dir.file("server.key"), "--broker-ca-file", dir.file("ca.pem")});
  gw.start();
  Process sim = start_sim(uri, dir.file("sim.log"),
                          {"--devices", "5", "--interval-s", "1", "--ca-file", dir.file("ca.pem"),
                           "--progress-s", "0"});
  CHECK(eventually([&] { return gw.list_all().size() == 5; }, 20s));
  REQUIRE(gw.patch_desired("sim-000000", {{"mode", "secure"}}).status == 200);
  CHECK(eventually([&] { return gw.get("/v1/twins/sim-000000").body["delta"].empty(); }, 20s));

  TestDevice trusting("t-1", uri, doppel::twins::Encoding::kJson, "twins",
                      {"", "", dir.file("ca.pem")});
  CHECK(trusting.try_connect());
  TestDevice other_ca("t-2", uri, doppel::twins::Encoding::kJson, "twins",
                      {"", "", dir.file("other-ca.pem")});
  CHECK(!other_ca.try_connect());
  TestDevice plain("t-3", "tcp://127.0.0.1:" + std::to_string(port));
  CHECK(!plain.try_connect());
  sim.signal(SIGINT);
  sim.wait_exit(10s);
}
