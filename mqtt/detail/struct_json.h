// Conversion between google.protobuf.Struct and nlohmann::json. Struct numbers are doubles:
// integral values within +-2^53 come back as JSON integers, so a document round-trips.
#pragma once

#include <google/protobuf/struct.pb.h>

#include "twins/document.h"
#include "twins/status.h"

namespace doppel::mqtt::detail {

// kInvalidArgument if `value` holds a number JSON cannot represent (NaN, infinity).
Result<twins::json> to_json(const google::protobuf::Struct& value);
// `value` must be an object.
void to_struct(const twins::json& value, google::protobuf::Struct& out);

}  // namespace doppel::mqtt::detail
