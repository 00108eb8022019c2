// ApiAuth: who may do what through the API. Bearer tokens given with --api-token may do
// everything, those given with --api-read-token may only read (GET, HEAD); with no token
// configured the API is open (doppeld allows that only on loopback). Some routes are open anyway
// (liveness, readiness, the API description: they hold no data). Tokens are compared in constant
// time and never logged.
//
// Thread-safety: immutable after construction.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "gateway/http_server.h"

namespace doppel::gateway {

class ApiAuth {
 public:
  ApiAuth(std::vector<std::string> tokens, std::vector<std::string> read_tokens);

  // nullopt: allowed. Otherwise the refusal to send: 401 (no or unknown token, with
  // WWW-Authenticate) or 403 (a read-only token asking to change something).
  std::optional<HttpResponse> refuse(const HttpRequest& req, bool open_route) const;

 private:
  std::vector<std::string> tokens_;
  std::vector<std::string> read_tokens_;
};

}  // namespace doppel::gateway
