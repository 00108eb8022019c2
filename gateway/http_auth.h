// ApiAuth: who may do what through the API. Bearer tokens given with --api-token may do
// everything, those given with --api-read-token may only read (GET, HEAD); with no token
// configured the API is open (doppeld allows that only on loopback). Some routes are open anyway
// (liveness, readiness, the API description: they hold no data). Tokens are compared in constant
// time and never logged. Tokens may be named (NAME=SECRET, NAME of letters, digits, '_', '.',
// '-'); a bare secret is named "default". The name is the request's principal, recorded on the
// changes it causes.
//
// With no token configured, a request is answered only when its Host names this gateway by a
// loopback name or address (localhost, *.localhost, 127.0.0.0/8, ::1) or by the --http address
// (or has no Host): a web page in the operator's browser that rebinds its own name to 127.0.0.1
// (DNS rebinding) sends its own name as Host and is refused (docs/security.md).
//
// Thread-safety: immutable after construction.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http_server.h"

namespace doppel::gateway {

class ApiAuth {
 public:
  // `http_host`: the address the API listens on (--http's host), also accepted as a Host.
  ApiAuth(std::vector<std::string> tokens, std::vector<std::string> read_tokens,
          std::string http_host = "127.0.0.1");

  // nullopt: allowed, and `principal` names the token used (left empty when none was needed).
  // Otherwise the refusal to send: 401 (no or unknown token, with WWW-Authenticate) or 403 (a
  // read-only token asking to change something).
  std::optional<HttpResponse> refuse(const HttpRequest& req, bool open_route,
                                     std::string& principal) const;

  struct Token {
    std::string name;
    std::string secret;
  };
  // "NAME=SECRET" -> {NAME, SECRET}; anything else -> {"default", the whole text}.
  static Token parse(const std::string& text);
  // The host of a Host header ("[::1]:8080" -> "::1", "Example.COM" -> "example.com"), lower case.
  static std::string host_of(std::string_view header);

 private:
  std::vector<Token> tokens_;
  std::vector<Token> read_tokens_;
  std::string http_host_;
};

}  // namespace doppel::gateway
