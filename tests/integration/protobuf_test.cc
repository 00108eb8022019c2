// A Protobuf-speaking device converges like a JSON one.
#include <doctest/doctest.h>

#include <signal.h>
#include "mqtt/codec.h"

#include "tests/support/harness.h"

using namespace doppel::testing;
using doppel::mqtt::WireCodec;
namespace twins = doppel::twins;

TEST_CASE("a simulated Protobuf fleet converges like a JSON one") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;
  Process sim = start_sim(broker.uri(), dir.file("sim.log"),
                          {"--devices", "10", "--encoding", "protobuf", "--interval-s", "1",
                           "--delta-delay-s", "0.05", "--progress-s", "0"});
  REQUIRE(eventually([&] { return gateway.list_all().size() == 10; }, 30s));
  for (auto& t : gateway.list_all()) CHECK(t["device"]["encoding"] == "protobuf");
  for (int i = 0; i < 10; ++i) {
    const std::string id = sim_id(i);
    REQUIRE(gateway.patch_desired(id, {{"mode", "eco"}, {"limits", {{"max", 1.5 * i}}}}).status ==
            200);
  }
  CHECK(eventually(
      [&] {
        auto all = gateway.list_all();
        for (auto& t : all) {
          if (!t["delta"].empty() || t["reported"].value("mode", "") != "eco") return false;
        }
        return all.size() == 10;
      },
      30s, 200ms));
  sim.signal(SIGINT);
  sim.wait_exit(15s);
}

TEST_CASE("a device declaring Protobuf in its birth gets Protobuf replies") {
  Stack stack;
  auto& [dir, broker, gateway] = stack;
  const WireCodec codec;
  TestDevice dev("pb-1", broker.uri(), twins::Encoding::kProtobuf);
  dev.connect();
  dev.publish("status",
              codec.encode_device(twins::StatusMessage{true, 5, twins::Encoding::kProtobuf},
                                  twins::Encoding::kProtobuf));
  twins::ReportedMessage rep;
  rep.state = {{"speed", 1}, {"name", "pump"}};
  dev.publish("reported", codec.encode_device(rep, twins::Encoding::kProtobuf));
  REQUIRE(eventually([&] { return gateway.get("/v1/twins/pb-1").status == 200; }, 10s));

  REQUIRE(gateway.patch_desired("pb-1", {{"speed", 3}}).status == 200);
  auto deltas = dev.wait_for("delta", 1);
  REQUIRE(deltas.size() == 1);
  auto delta =
      codec.decode_device(twins::OutboundKind::kDelta, deltas[0], twins::Encoding::kProtobuf);
  REQUIRE(delta);
  CHECK(std::get<twins::DeltaOut>(*delta).state == json{{"speed", 3}});
  CHECK(std::get<twins::DeltaOut>(*delta).version == 1);

  dev.publish("get", codec.encode_device(twins::GetMessage{"t-9"}, twins::Encoding::kProtobuf));
  auto docs = dev.wait_for("twin", 1);
  REQUIRE(docs.size() == 1);
  auto doc = codec.decode_device(twins::OutboundKind::kTwin, docs[0], twins::Encoding::kProtobuf);
  REQUIRE(doc);
  CHECK(std::get<twins::TwinOut>(*doc).token == "t-9");
  CHECK(std::get<twins::TwinOut>(*doc).document["reported"]["name"] == "pump");

  rep.state = {{"speed", 3}};
  dev.publish("reported", codec.encode_device(rep, twins::Encoding::kProtobuf));
  CHECK(eventually([&] { return gateway.get("/v1/twins/pb-1").body["delta"].empty(); }, 10s));
  CHECK(gateway.get("/v1/twins/pb-1").body["reconcile"]["state"] == "converged");
}
