// HttpApi: the operator API of DESIGN §5 over the event-driven HttpServer, assembled from its
// parts: the Router (http_router.h: raw-path routing, 404/405), ApiAuth (http_auth.h: bearer
// tokens), the handlers of each resource (api_handlers.h), and the problem vocabulary
// (http_problems.h: every error is application/problem+json, RFC 9457). Handlers answer only
// after the change they caused is committed (the runtime's output gate) — from the store's writer
// thread, never by blocking a network thread.
//
// Thread-safety: start() and stop() from the owner; everything the handlers touch is
// thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/http_problems.h"
#include "gateway/http_server.h"
#include "gateway/query_gate.h"
#include "twins/metrics.h"
#include "twins/ports.h"
#include "twins/runtime.h"

namespace doppel::twins {
class JobEngine;
}

namespace doppel::gateway {

class DeviceCredentials;
class FeedHub;

class ClusterNode;

struct Readiness {
  bool store_open = false;
  bool broker_connected = false;  // connected and subscribed: device messages reach doppeld
  // Not connected-and-subscribed, why: the connection is up but the subscriptions are not answered
  // yet, or the broker refused them (its ACL). Both false while not connected at all.
  bool broker_subscribing = false;
  bool broker_refused = false;
  // Ready but degraded: the broker dropped messages recently (MqttChannel::broker_dropping).
  bool broker_dropping = false;
  uint64_t broker_dropped = 0;
  std::string broker_state;  // the embedded broker's supervisor state; empty for an external one
};

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port (see HttpApi::port())
  HttpServerOptions server;  // connection limits and timeouts (host and port are taken from here)
  // Bearer tokens. With none, the API is open (doppeld allows that only on loopback).
  std::vector<std::string> tokens;       // full access
  std::vector<std::string> read_tokens;  // GET only
  // Wakes change-feed streams (the owner connects it to TwinStore::on_events). Null: HttpApi
  // makes its own and connects it.
  FeedHub* feed = nullptr;
  // Serves /v1/jobs (optional: 503 without).
  twins::JobEngine* jobs = nullptr;
  // A cluster node (doppeld --cluster): requests for twins it does not serve go to their owner,
  // and GET /v1/cluster describes the cluster. Null: this gateway serves every twin.
  ClusterNode* cluster = nullptr;
  QueryOptions queries;  // what a fleet query may cost
};

class HttpApi {
 public:
  // `device_auth` (optional) issues device credentials on PUT {"credentials": true} and
  // revokes them on DELETE.
  HttpApi(HttpOptions options, twins::Runtime& runtime, twins::TwinStore& store, Metrics& metrics,
          std::function<Readiness()> readiness, DeviceCredentials* device_auth);
  ~HttpApi();

  // Binds and serves on a background thread.
  Status start();
  void stop();
  int port() const;
  // Every route served: (method, path pattern with {placeholders}), as in the OpenAPI document.
  static std::vector<std::pair<std::string, std::string>> routes();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace doppel::gateway
