// The OpenAPI 3.1 description of the HTTP API (gateway/openapi.json, compiled in), served at
// GET /v1/openapi.json. tests/gateway/openapi_test.cc checks it against HttpApi::routes().
#pragma once

#include <string_view>

namespace doppel::gateway {

std::string_view openapi_document();

}  // namespace doppel::gateway
