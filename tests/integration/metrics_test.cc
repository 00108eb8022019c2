// /metrics passes `promtool check metrics` (Prometheus's own linter) after real traffic, so every
// family the gateway registers is named and typed as Prometheus expects.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>

#include "tests/support/harness.h"

using namespace doppel::testing;

TEST_CASE("the /metrics exposition passes promtool check metrics") {
  Stack stack;
  auto& gw = stack.gateway;
  TestDevice dev("m-1", stack.broker.uri());
  dev.connect();
  dev.publish("status", R"({"state":"online","interval_s":30})");
  dev.publish("reported", R"({"state":{"t":1}})");
  REQUIRE(gw.patch_desired("m-1", {{"mode", "eco"}}).status == 200);
  REQUIRE(gw.request("POST", "/v1/twins/m-1/commands", R"({"name":"reboot"})").status == 202);
  REQUIRE(eventually([&] { return gw.get("/v1/twins/m-1").body["reported"]["t"] == 1; }, 10s));

  const std::string text = gw.text("/metrics");
  REQUIRE(text.find("doppel_twins ") != std::string::npos);
  const std::string file = stack.dir.file("metrics.txt");
  std::ofstream(file) << text;
  FILE* p = ::popen(("promtool check metrics < " + file + " 2>&1").c_str(), "r");
  REQUIRE_MESSAGE(p != nullptr, "promtool not runnable (apt-get install prometheus)");
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  INFO(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 127: promtool missing; 1 or 3: problems, listed above
  CHECK(out.empty());
}
