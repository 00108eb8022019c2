// libFuzzer: device messages in Protobuf, including deeply nested Structs. Decoding never
// crashes, holds the depth and size limits, and round-trips.
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
  auto msg = codec.decode(kind, payload, Encoding::kProtobuf, limits);
  if (!msg) return 0;
  if (const auto* r = std::get_if<ReportedMessage>(&*msg)) {
    if (depth_of(r->state) > limits.max_depth) std::abort();
  }
  if (const auto* c = std::get_if<CommandResultMessage>(&*msg)) {
    if (!c->result.is_null() && depth_of(c->result) > limits.max_depth) std::abort();
  }
  const std::string again = codec.encode_device(*msg, Encoding::kProtobuf);
  auto back = codec.decode(kind, again, Encoding::kProtobuf, limits);
  if (!back) std::abort();
  return 0;
}
