// libFuzzer: topic parsing. Never crashes; a topic that parses is rebuilt exactly from its parts,
// with a valid device id.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mqtt/topics.h"

using namespace doppel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string topic(reinterpret_cast<const char*>(data), size);
  const twins::Limits limits;
  auto t = mqtt::parse_inbound_topic(topic, "twins", limits);
  (void)mqtt::raw_device_segment(topic, "twins");
  if (!t) return 0;
  if (!twins::valid_device_id(t->device_id, limits)) std::abort();
  if (mqtt::device_topic("twins", t->device_id, t->kind, t->command_id) != topic) std::abort();
  return 0;
}
