// Gateway: the whole daemon, wired — store, embedded (or external) broker, MQTT channel, twin
// runtime and HTTP API — with the start-up and shutdown order that keeps promises: nothing is
// acknowledged before it is committed, and shutdown commits and flushes before it disconnects.
// `doppeld` is a thin main() around it; tests may also run it in-process.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/http_api.h"
#include "storage/group_commit.h"
#include "twins/clock.h"
#include "twins/document.h"
#include "twins/job_engine.h"
#include "twins/metrics.h"
#include "twins/runtime.h"

namespace doppel::storage {
class CredentialStore;
}  // namespace doppel::storage
namespace doppel::mqtt {
class DynsecClient;
class MqttChannel;
class WireCodec;
}  // namespace doppel::mqtt

namespace doppel::gateway {

class BrokerAccounts;
class ClusterNode;
class ClusterJobs;
class DeviceAuth;
class DeviceCredentials;
class DeviceCa;
class EmbeddedBroker;
class FeedHub;

struct GatewayConfig {
  std::string broker;  // external broker URL; empty: start the embedded one
  std::string broker_bind = "127.0.0.1";
  int broker_port = 1883;  // of the embedded broker
  std::string mosquitto;   // path of the mosquitto binary (embedded broker)
  std::string broker_username;
  // --broker loads gateway/broker_plugin with plugin_opt_relay_user = broker_username: QoS 0
  // publishes go to it relayed, many per packet (the embedded broker always does this).
  bool broker_relay = false;
  std::string broker_password;
  std::string broker_ca_file;   // trust for the broker's certificate (ssl://)
  std::string broker_tls_cert;  // embedded broker: TLS certificate and key
  std::string broker_tls_key;
  // Per-device credentials and ACL: the embedded broker's files, or with `broker` the external
  // broker's dynamic-security plugin (broker_accounts.h).
  bool device_auth = false;
  bool device_auth_x509 = false;  // ... as X.509 client certificates (--device-auth x509)
  std::string device_ca_cert;     // x509: the device CA (else created in the data dir)
  std::string device_ca_key;
  std::vector<std::string> api_tokens;       // bearer tokens with full access
  std::vector<std::string> api_read_tokens;  // bearer tokens for GET only
  std::string client_id = "doppel-gateway";
  std::string topic_prefix = "twins";
  std::string http = "127.0.0.1:8080";  // HOST:PORT; port 0 picks a free one
  HttpServerOptions http_server;        // connection limits and timeouts
  QueryOptions queries;                 // what one fleet query may cost (--query-*)
  std::string data_dir = "./doppel-data";
  // Where twins are stored: empty for the SQLite file in data_dir, or a PostgreSQL URI
  // (postgresql://user[:password]@host:port/db).
  std::string store;
  bool durability_full = false;
  // The group commit's gathering window under a steady stream of writes (storage/group_commit.h).
  std::chrono::microseconds commit_gather = storage::kDefaultCommitGather;
  size_t shards = 0;  // 0: the number of cores
  double hibernate_after_s = 60;
  size_t max_hot_twins = 1'000'000;
  bool auto_provision = true;
  twins::Policy policy;                               // policy.record_changes: the change feed
  double history_retention_s = 7 * 24 * 3600;         // events older than this are pruned
  uint64_t history_max_reported_events = 50'000'000;  // and reported.updated beyond this many
  // Fleet-query fields with an expression index (--index), e.g. "reported.fw".
  std::vector<std::string> query_indexes;
  // A node of a cluster of doppelds on one PostgreSQL database (--cluster, docs/scale-out.md).
  bool cluster = false;
  std::string node_id;         // --node-id
  std::string advertise;       // --advertise http://host:port
  std::string cluster_secret;  // the contents of --cluster-secret-file
  double lease_s = 5;          // --lease-s: a partition lease; renewed every fifth of it
};

class Gateway {
 public:
  explicit Gateway(GatewayConfig config);
  ~Gateway();

  Status start();
  // Orderly shutdown: stop HTTP, drain the runtime, commit, flush publishes, disconnect, stop
  // the embedded broker. Idempotent.
  void stop();

  Readiness readiness() const;
  int http_port() const;
  // Where devices connect (the embedded broker's device listener, or --broker).
  std::string broker_uri() const;
  std::string database_path() const;
  // The store, as a log line may name it: the SQLite file, or the PostgreSQL URI without its
  // password.
  std::string store_name() const;
  Metrics& metrics() { return metrics_; }

 private:
  Status lock_data_dir();

  GatewayConfig config_;
  Metrics metrics_;
  twins::SystemClock clock_;
  std::unique_ptr<mqtt::WireCodec> codec_;
  int lock_fd_ = -1;
  std::string broker_uri_;
  std::unique_ptr<EmbeddedBroker> broker_;
  std::unique_ptr<twins::TwinStore> store_;
  std::unique_ptr<storage::CredentialStore> credentials_;
  std::unique_ptr<DeviceCa> device_ca_;
  std::unique_ptr<DeviceAuth> device_auth_;          // --device-auth, embedded broker
  std::unique_ptr<mqtt::DynsecClient> dynsec_;       // --device-auth with --broker ...
  std::unique_ptr<BrokerAccounts> broker_accounts_;  // ... through it
  DeviceCredentials* credentials_port_ = nullptr;    // whichever of the two, or none
  std::unique_ptr<mqtt::MqttChannel> channel_;
  std::unique_ptr<ClusterNode> cluster_;  // --cluster; before the runtime, which asks it
  std::unique_ptr<twins::Runtime> runtime_;
  std::unique_ptr<ClusterJobs> cluster_jobs_;  // --cluster: the job engine's way to other nodes
  std::unique_ptr<twins::JobEngine> jobs_;
  std::unique_ptr<HttpApi> http_;
  std::unique_ptr<FeedHub> feed_;
  // The history pruner: a background thread, never in the commit path.
  void prune_loop();
  std::thread pruner_;
  std::mutex prune_mu_;
  std::condition_variable prune_cv_;
  bool prune_stop_ = false;
  bool stopped_ = false;
};

// Splits "HOST:PORT" ("[::1]:8080" for IPv6). False if malformed.
bool split_host_port(const std::string& address, std::string& host, int& port);
// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const std::string& host);

}  // namespace doppel::gateway
