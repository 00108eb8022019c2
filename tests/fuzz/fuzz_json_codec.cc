// libFuzzer: device messages in JSON. Decoding never crashes, enforces the limits, and whatever
// decodes re-encodes to something that decodes to the same message.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "mqtt/codec.h"

using namespace doppel::twins;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const doppel::mqtt::WireCodec codec;
  Limits limits;
  limits.max_document_bytes = 4096;
  const auto kind = static_cast<InboundKind>(data[0] % 4);
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  auto msg = codec.decode(kind, payload, Encoding::kJson, limits);
  if (!msg) return 0;
  if (const auto* r = std::get_if<ReportedMessage>(&*msg)) {
    if (depth_of(r->state) > limits.max_depth + 1) std::abort();
  }
  const std::string again = codec.encode_device(*msg, Encoding::kJson);
  auto back = codec.decode(kind, again, Encoding::kJson, limits);
  if (!back) std::abort();
  if (const auto* r = std::get_if<ReportedMessage>(&*msg)) {
    if (!values_equal(r->state, std::get<ReportedMessage>(*back).state)) std::abort();
  }
  return 0;
}
