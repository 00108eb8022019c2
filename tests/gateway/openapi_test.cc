// The OpenAPI document describes exactly what the server routes: every route HttpApi registers is
// in the document with its method, and every path and method in the document is served.
#include <doctest/doctest.h>

#include <set>

#include "gateway/http_api.h"
#include "gateway/openapi.h"
#include "twins/document.h"

using doppel::twins::json;

TEST_CASE("the OpenAPI document and the router describe the same routes") {
  const json doc = json::parse(doppel::gateway::openapi_document());
  CHECK(doc["openapi"] == "3.1.0");
  std::set<std::pair<std::string, std::string>> documented;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (method == "parameters") continue;
      std::string upper = method;
      for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.emplace(upper, path);
      CHECK_MESSAGE(op.contains("operationId"), method << " " << path);
      CHECK_MESSAGE(op["responses"].is_object(), method << " " << path);
    }
  }
  std::set<std::pair<std::string, std::string>> routed;
  for (const auto& r : doppel::gateway::HttpApi::routes()) routed.insert(r);
  for (const auto& r : routed)
    CHECK_MESSAGE(documented.count(r) == 1, "undocumented: " << r.first << " " << r.second);
  for (const auto& d : documented)
    CHECK_MESSAGE(routed.count(d) == 1, "not served: " << d.first << " " << d.second);
  CHECK(routed.size() == documented.size());
}

TEST_CASE("every problem type the API answers with is in the document") {
  const json doc = json::parse(doppel::gateway::openapi_document());
  const json& types = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"];
  for (const char* code : {"malformed",
                           "invalid_argument",
                           "invalid_id",
                           "too_large",
                           "too_deep",
                           "not_found",
                           "precondition_failed",
                           "conflict",
                           "queue_full",
                           "unavailable",
                           "internal",
                           "unauthorized",
                           "forbidden",
                           "unsupported_media_type",
                           "method_not_allowed",
                           "headers_too_large",
                           "request_timeout",
                           "gone",
                           "fenced",
                           "invalid_query"}) {
    CHECK_MESSAGE(std::find(types.begin(), types.end(),
                            std::string("urn:doppel:problem:") + code) != types.end(),
                  code);
  }
}
