// The AWS dialect's payloads (twins::Dialect::kAws): the classic Device Shadow's requests and
// answers as AWS IoT documents them, JSON only. Timestamps are epoch seconds; errors carry AWS's
// numeric codes. WireCodec (codec.h) dispatches here for AWS-dialect twins. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "twins/device_io.h"
#include "twins/status.h"

namespace doppel::mqtt {

// AWS caps a request's clientToken at 64 bytes.
inline constexpr size_t kAwsMaxClientTokenBytes = 64;

// A shadow request: kReported (update: state.desired and/or state.reported, clientToken,
// version), kGet, kDelete (clientToken, version). A `null` section clears it.
Result<twins::DeviceMessage> decode_aws(twins::InboundKind kind, std::string_view payload,
                                        const twins::Limits& limits);
// An answer: the delta, a ShadowReply's body, an error as {"code", "message", "timestamp",
// "clientToken"}.
std::string encode_aws(const twins::DeviceOutput& output);

// The clientToken of a request that could not be decoded, when it has a usable one (so that the
// refusal can name it: the SDKs match answers by token). Empty otherwise.
std::string aws_client_token(std::string_view payload, const twins::Limits& limits);

// AWS's code for a refusal: 400 bad request, 404, 409 version conflict, 413 too large, 429, 500.
int aws_error_code(std::string_view doppel_code);

// What an AWS-dialect device sends (the simulator and tests): an update of reported (and desired
// when given), or a get or delete, with clientToken and version when set.
std::string encode_aws_device(const twins::DeviceMessage& message);

}  // namespace doppel::mqtt
