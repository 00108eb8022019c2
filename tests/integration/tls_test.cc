// TLS with a throwaway CA made with openssl. The embedded broker serves MQTT over TLS (the gateway
// and the simulator connect with the CA); the API serves HTTPS (curl --cacert: requests,
// keep-alive, a stream). Clients without the CA, or without TLS, are refused; a key that does not
// match its certificate stops doppeld at start with a clear error.
#include <doctest/doctest.h>

#include <signal.h>

#include <sys/wait.h>

#include <cstdio>
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

// Runs a shell command: its standard output and exit status.
std::pair<std::string, int> run(const std::string& command) {
  std::string out;
  FILE* f = ::popen(command.c_str(), "r");
  if (f == nullptr) return {"", -1};
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int status = ::pclose(f);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

}  // namespace

TEST_CASE("the API over HTTPS: curl --cacert works; no CA or plain HTTP is refused") {
  TempDir dir;
  make_ca_and_server_cert(dir);
  Broker broker(dir);
  Doppeld gw(dir.file("data"), broker.uri(),
             {"--http-tls-cert", dir.file("server.pem"), "--http-tls-key", dir.file("server.key")});
  const std::string base = "https://127.0.0.1:" + std::to_string(gw.http_port());
  const std::string curl = "curl -sS --max-time 20 --cacert " + dir.file("ca.pem") + " ";
  gw.start_with([&] {
    return run(curl + "-o /dev/null -w '%{http_code}' " + base + "/readyz 2>/dev/null").first ==
           "200";
  });

  auto patch = run(curl +
                   "-X PATCH -H 'Content-Type: application/merge-patch+json' "
                   "-d '{\"mode\":\"tls\"}' -o /dev/null -w '%{http_code}' " +
                   base + "/v1/twins/h-1/desired");
  CHECK(patch.second == 0);
  CHECK(patch.first == "200");
  auto desired = run(curl + base + "/v1/twins/h-1/desired");
  CHECK(json::parse(desired.first, nullptr, false) == json{{"mode", "tls"}});
  // Keep-alive over TLS: curl makes two requests on one connection.
  auto two = run(curl + "-o /dev/null -o /dev/null -w '%{num_connects},' " + base + "/healthz " +
                 base + "/healthz");
  CHECK(two.first == "1,0,");
  // A stream over TLS, to its clean end (curl fails on a cut chunked stream).
  auto ticks = run(curl + "-N '" + base + "/v1/debug/ticks?count=3&interval_ms=10'");
  CHECK(ticks.second == 0);
  CHECK(occurrences(ticks.first, "event: tick\n") == 3);

  // Without the CA the certificate is not trusted (curl: 60); plain HTTP gets no HTTP answer.
  CHECK(run("curl -sS --max-time 20 -o /dev/null " + base + "/healthz 2>/dev/null").second == 60);
  auto plain = run("curl -sS --max-time 20 -o /dev/null -w '%{http_code}' http://127.0.0.1:" +
                   std::to_string(gw.http_port()) + "/healthz 2>/dev/null");
  CHECK(plain.second != 0);
  CHECK(plain.first != "200");
  const std::string metrics = run(curl + base + "/metrics").first;
  CHECK(metric(metrics, "doppel_http_refused_total{reason=\"tls_handshake\"}") >= 2);
  CHECK(gw.running());
}

TEST_CASE("an HTTPS key that does not match its certificate stops doppeld at start") {
  TempDir dir;
  make_ca_and_server_cert(dir);
  Broker broker(dir);
  Process p({DOPPELD_PATH, "--data", dir.file("data"), "--broker", broker.uri(), "--http",
             "127.0.0.1:" + std::to_string(free_port()), "--http-tls-cert", dir.file("server.pem"),
             "--http-tls-key", dir.file("other.key")},
            dir.file("d.log"));
  int status = 0;
  REQUIRE(p.wait_exit(20s, &status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(p.log().find("--http-tls-key") != std::string::npos);
}

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
