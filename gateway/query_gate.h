// QueryGate: how many fleet queries each client runs at once. A fleet query (GET /v1/twins with
// q= or a sort other than id, GET /v1/fleet/count, POST /v1/jobs's target query) may scan the
// whole fleet; they run on their own blocking pool, and the gate keeps one client from filling
// that pool for everyone: a client is its token's name, or its address when the API is open.
//
// Thread-safety: every member is thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace doppel::gateway {

// What fleet queries may cost (doppeld --query-*).
struct QueryOptions {
  // A query still running after this long is stopped and answered 503 (urn:doppel:problem:timeout).
  std::chrono::milliseconds timeout{10'000};
  size_t per_client = 4;      // running at once per client; more are answered 429
  size_t max_groups = 1'000;  // GET /v1/fleet/count?group_by= keeps the largest this many
};

class QueryGate {
 public:
  explicit QueryGate(size_t per_client) : per_client_(per_client) {}

  // Held while a query of `client` runs (release it by resetting it, before answering); null
  // when the client already runs per_client queries.
  std::shared_ptr<void> admit(const std::string& client);
  size_t per_client() const { return per_client_; }

 private:
  const size_t per_client_;
  std::mutex mu_;
  std::unordered_map<std::string, size_t> running_;  // under mu_
};

}  // namespace doppel::gateway
