// WireCodec: the JSON and Protobuf forms of every device message (DESIGN §4), behind the
// DeviceCodec port. Decoding enforces the limits before building anything large: payload size
// first, then nesting depth (a bracket scan for JSON, a recursion limit for Protobuf), then the
// envelope's fields and types. Stateless and thread-safe.
#pragma once

#include "twins/ports.h"

namespace doppel::mqtt {

inline constexpr std::string_view kProtobufContentType = "application/x-protobuf";
inline constexpr std::string_view kJsonContentType = "application/json";

class WireCodec final : public twins::DeviceCodec {
 public:
  WireCodec();
  // The AWS dialect (aws_codec.h) is JSON whatever `wire.encoding` says.
  Result<twins::DeviceMessage> decode(twins::InboundKind kind, std::string_view payload,
                                      twins::Wire wire, const twins::Limits& limits) const override;
  std::string encode(const twins::DeviceOutput& output, twins::Wire wire) const override;
  std::string refused_token(std::string_view payload, twins::Wire wire,
                            const twins::Limits& limits) const override;

  // The inverse pair, for devices (the simulator) and tests: encode what a device sends,
  // decode what it receives.
  std::string encode_device(const twins::DeviceMessage& message, twins::Encoding encoding) const;
  Result<twins::DeviceOutput> decode_device(twins::OutboundKind kind, std::string_view payload,
                                            twins::Encoding encoding) const;
};

}  // namespace doppel::mqtt
