#include "gateway/gateway.h"

#include "gateway/feed.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "gateway/broker_accounts.h"
#include "gateway/cluster.h"
#include "gateway/cluster_jobs.h"
#include "gateway/device_auth.h"
#include "gateway/device_ca.h"
#include "gateway/embedded_broker.h"
#include "mqtt/channel.h"
#include "mqtt/codec.h"
#include "storage/postgres/postgres_store.h"
#include "storage/sqlite/credential_store.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::gateway {
namespace {

// The batch connection's username on an embedded broker without device accounts (which takes
// any), so that the broker plugin can tell doppeld's relay from anyone else's.
constexpr std::string_view kAnonymousRelayUser = "doppel-gateway-qos0";

// The broker plugin (gateway/broker_plugin), built beside doppeld; empty when it is not there.
std::string broker_plugin_path() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  const auto plugin = exe.parent_path() / "doppel_broker_plugin.so";
  return std::filesystem::exists(plugin, ec) ? plugin.string() : std::string();
}

}  // namespace

bool split_host_port(const std::string& address, std::string& host, int& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size()) return false;
  host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return false;
  const std::string p = address.substr(colon + 1);
  if (p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  port = std::stoi(p);
  return port >= 0 && port <= 65535;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

Gateway::Gateway(GatewayConfig config)
    : config_(std::move(config)), codec_(std::make_unique<mqtt::WireCodec>()) {}

Gateway::~Gateway() { stop(); }

std::string Gateway::store_name() const {
  if (config_.store.empty()) return database_path();
  // postgresql://user:password@host/db -> postgresql://user@host/db
  std::string uri = config_.store;
  const size_t scheme = uri.find("://");
  const size_t at = uri.find('@');
  if (scheme != std::string::npos && at != std::string::npos && at > scheme) {
    const size_t colon = uri.find(':', scheme + 3);
    if (colon != std::string::npos && colon < at) uri.erase(colon, at - colon);
  }
  return uri;
}

std::string Gateway::database_path() const {
  return (std::filesystem::path(config_.data_dir) / "doppel.db").string();
}

Status Gateway::lock_data_dir() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool existed = fs::exists(config_.data_dir, ec);
  fs::create_directories(config_.data_dir, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable,
                  "cannot create data directory " + config_.data_dir + ": " + ec.message());
  }
  // It holds the database with credential hashes and the broker's password file: owner only.
  const fs::perms others = fs::perms::group_all | fs::perms::others_all;
  if ((fs::status(config_.data_dir, ec).permissions() & others) != fs::perms::none) {
    fs::permissions(config_.data_dir, others, fs::perm_options::remove, ec);
    if (ec) {
      log_warn("data directory " + config_.data_dir + " is open to other users and chmod failed (" +
               ec.message() + "); it holds credential hashes: chmod 700 it");
    } else if (existed) {
      log_info("data directory " + config_.data_dir +
               " made owner-only (it holds credential "
               "hashes)");
    }
  }
  const std::string path = (std::filesystem::path(config_.data_dir) / "doppeld.lock").string();
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status(StatusCode::kUnavailable, "another doppeld is using " + config_.data_dir +
                                                "; stop it or choose another --data directory");
  }
  return Status::ok();
}

Status Gateway::start() {
  std::string http_host;
  int http_port = 0;
  if (!split_host_port(config_.http, http_host, http_port)) {
    return Status(StatusCode::kInvalidArgument,
                  "--http must be HOST:PORT, e.g. 127.0.0.1:8080 (got '" + config_.http + "')");
  }
  if (!is_loopback(http_host) && config_.api_tokens.empty() && config_.api_read_tokens.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "refusing to serve the HTTP API on non-loopback address " + http_host +
                      " without authentication: give it bearer tokens (--api-token, in a --config "
                      "file so they stay out of ps), or bind to 127.0.0.1");
  }
  if (config_.device_auth && !config_.broker.empty()) {
    if (config_.device_auth_x509) {
      return Status(StatusCode::kInvalidArgument,
                    "--device-auth x509 needs the embedded broker (it writes the broker's CRL); "
                    "with --broker, --device-auth keeps passwords in the broker's "
                    "dynamic-security plugin (docs/security.md)");
    }
    if (config_.broker_username.empty() || config_.broker_password.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "--device-auth with --broker manages the broker's dynamic-security plugin: "
                    "give --broker-username and --broker-password of an account with the "
                    "plugin's admin role (mosquitto_ctrl dynsec init; docs/security.md)");
    }
  }
  if (config_.broker.empty() && !is_loopback(config_.broker_bind) && !config_.device_auth) {
    return Status(StatusCode::kInvalidArgument,
                  "refusing to open the embedded broker on " + config_.broker_bind +
                      " without device authentication: add --device-auth (passwords) or "
                      "--device-auth x509 (certificates, with --broker-tls-cert/--broker-tls-key)");
  }
  if (config_.device_auth_x509 && config_.broker_tls_cert.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--device-auth x509 needs the broker's own TLS certificate: devices present "
                  "theirs over TLS; give --broker-tls-cert and --broker-tls-key");
  }
  if (config_.device_ca_cert.empty() != config_.device_ca_key.empty()) {
    return Status(StatusCode::kInvalidArgument, "--device-ca-cert and --device-ca-key go together");
  }
  if (config_.broker.empty() && config_.broker_tls_cert.empty() != config_.broker_tls_key.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--broker-tls-cert and --broker-tls-key go together");
  }
  if (config_.cluster && config_.store.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--cluster needs --store postgresql://...: every node of a cluster shares one "
                  "PostgreSQL database (docs/scale-out.md)");
  }
  if (config_.cluster && config_.broker.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--cluster needs --broker tcp://... (or ssl://): every node of a cluster shares "
                  "one MQTT broker, and an embedded broker would be this node's alone "
                  "(docs/scale-out.md; scripts/run-cluster.sh starts one)");
  }
  if (config_.cluster && config_.lease_s < 1) {
    return Status(StatusCode::kInvalidArgument, "--lease-s must be at least 1 second");
  }
  if (Status s = lock_data_dir(); !s) return s;

  if (config_.store.empty()) {
    storage::StoreOptions store_options;
    store_options.path = database_path();
    store_options.indexes = config_.query_indexes;
    store_options.durability =
        config_.durability_full ? storage::Durability::kFull : storage::Durability::kNormal;
    store_options.commit_gather = config_.commit_gather;
    auto store = storage::SqliteTwinStore::open(store_options, metrics_);
    if (!store) return store.status();
    store_ = std::move(*store);
  } else {
    storage::PostgresOptions store_options;
    store_options.uri = config_.store;
    store_options.indexes = config_.query_indexes;
    store_options.cluster = config_.cluster;
    store_options.commit_gather = config_.commit_gather;
    if (config_.cluster) {
      // Half a lease: a frozen node's transaction ends well before its leases do.
      store_options.writer_timeout =
          std::chrono::milliseconds(static_cast<int64_t>(config_.lease_s * 500));
    }
    auto store = storage::PostgresTwinStore::open(store_options, metrics_);
    if (!store) {
      return Status(store.status().code(),
                    "--store " + store_name() + ": " + store.status().message());
    }
    if (config_.cluster) {
      ClusterConfig cluster;
      cluster.node_id = config_.node_id;
      cluster.advertise = config_.advertise;
      cluster.secret = config_.cluster_secret;
      cluster.leases.lease = static_cast<twins::Millis>(config_.lease_s * 1000);
      cluster.leases.renew_every = cluster.leases.lease / 5;
      cluster.leases.safety_margin = cluster.leases.lease / 5;
      auto node = ClusterNode::open(cluster, config_.store, **store, metrics_);
      if (!node) return node.status();
      cluster_ = std::move(*node);
    }
    store_ = std::move(*store);
  }
  // Change-feed streams wake on commits; the listener is set before any write.
  feed_ = std::make_unique<FeedHub>(metrics_);
  store_->on_events([hub = feed_.get()](uint64_t, const std::vector<twins::EventRecord>& events) {
    hub->notify(events);
  });
  if (config_.policy.record_changes) {
    pruner_ = std::thread([this] {
      name_this_thread("feed-pruner");
      prune_loop();
    });
  }

  std::string broker_user = config_.broker_username;
  std::string broker_password = config_.broker_password;
  if (config_.broker.empty()) {
    BrokerOptions b{config_.data_dir,
                    config_.broker_bind,
                    config_.broker_port,
                    config_.mosquitto,
                    "",
                    "",
                    config_.broker_tls_cert,
                    config_.broker_tls_key,
                    "",
                    "",
                    "",
                    "",
                    ""};
    if (config_.device_auth) {
      auto creds = storage::CredentialStore::open(database_path());
      if (!creds) return creds.status();
      credentials_ = std::move(*creds);
      if (config_.device_auth_x509) {
        auto ca = DeviceCa::open(
            DeviceCaOptions{(std::filesystem::path(config_.data_dir) / "device-ca").string(),
                            config_.device_ca_cert, config_.device_ca_key});
        if (!ca) return ca.status();
        device_ca_ = std::move(*ca);
      }
      device_auth_ = std::make_unique<DeviceAuth>(
          DeviceAuthOptions{(std::filesystem::path(config_.data_dir) / "mosquitto").string(),
                            config_.topic_prefix, "doppel-gateway", device_ca_.get()},
          *credentials_);
      if (Status s = device_auth_->start(); !s) return s;
      b.password_file = device_auth_->password_file();
      b.acl_file = device_auth_->acl_file();
      if (device_ca_) {
        b.device_ca_file = device_ca_->ca_file();
        b.crl_file = device_ca_->crl_file();
      }
      broker_user = device_auth_->gateway_user();
      broker_password = device_auth_->gateway_password();
    }
    b.plugin_file = broker_plugin_path();
    if (b.plugin_file.empty()) {
      log_warn(
          "the broker plugin doppel_broker_plugin.so is not beside doppeld: devices that "
          "send no last will are seen offline only when they go stale");
    }
    if (device_auth_) b.gateway_user = device_auth_->gateway_user();
    if (!b.plugin_file.empty()) {
      // The batch connection's user relays; without device accounts the broker takes any
      // username, and the batch connection names itself so that the plugin knows it.
      b.relay_user = device_auth_ ? device_auth_->batch_user() : std::string(kAnonymousRelayUser);
    }
    broker_ = std::make_unique<EmbeddedBroker>(b);
    if (Status s = broker_->start(); !s) return s;
    if (device_auth_) device_auth_->on_change([b = broker_.get()] { b->reload(); });
    broker_uri_ = broker_->gateway_uri();
  } else {
    broker_uri_ = config_.broker;
  }
  if (device_auth_) credentials_port_ = device_auth_.get();
  const bool tls = broker_uri_.rfind("ssl://", 0) == 0;
  if (tls && config_.broker_ca_file.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "connecting to " + broker_uri_ +
                      " needs --broker-ca-file: the CA certificate that signed the broker's");
  }

  mqtt::ChannelOptions channel_options;
  channel_options.client.uri = broker_uri_;
  // Every node has its own session on the shared broker, and receives every device message.
  channel_options.client.client_id =
      config_.cluster ? config_.client_id + "-" + config_.node_id : config_.client_id;
  channel_options.client.username = broker_user;
  channel_options.client.password = broker_password;
  if (tls) channel_options.client.tls = mqtt::TlsOptions{config_.broker_ca_file, "", ""};
  channel_options.client.clean_start = false;
  channel_options.client.session_expiry_s = 7 * 24 * 3600;
  channel_options.client.max_buffered = 1'000'000;
  channel_options.client.max_inflight = 65535;
  channel_options.prefix = config_.topic_prefix;
  channel_options.limits = config_.policy.limits;
  channel_options.broker_notices = broker_ != nullptr;
  // A plain-TCP broker (the embedded broker's gateway listener, or --broker tcp://host:port)
  // takes doppeld's publishes in batches on a second connection (mqtt/batch_publisher.h).
  constexpr std::string_view kTcp = "tcp://";
  if (broker_uri_.starts_with(kTcp)) {
    const std::string hostport = broker_uri_.substr(kTcp.size());
    const size_t colon = hostport.rfind(':');
    const int port = colon == std::string::npos ? 1883 : std::atoi(hostport.c_str() + colon + 1);
    std::string host = hostport.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);  // [::1]
    }
    if (port > 0 && !host.empty()) {
      channel_options.batch_host = std::move(host);
      channel_options.batch_port = port;
      if (device_auth_) {
        channel_options.batch_username = device_auth_->batch_user();
        channel_options.bulk_username = device_auth_->bulk_user();
      }
      if (broker_ != nullptr && !broker_->relay_user().empty()) {
        channel_options.batch_username = broker_->relay_user();
        channel_options.batch_relay = true;
      } else if (broker_ == nullptr && config_.broker_relay) {
        channel_options.batch_relay = true;  // as the user who connects (--broker-username)
      }
    }
  }
  if (config_.device_auth && broker_ == nullptr) {
    // The broker's dynamic-security plugin keeps the accounts (broker_accounts.h). Its own
    // connection, set up before the channel subscribes: doppeld's account gets its role first.
    mqtt::ClientOptions admin = channel_options.client;
    admin.client_id += "-dynsec";
    admin.clean_start = true;
    admin.session_expiry_s = 0;
    admin.max_buffered = 10'000;
    dynsec_ = std::make_unique<mqtt::DynsecClient>(admin);
    if (Status s = dynsec_->start(std::chrono::seconds(30)); !s) return s;
    broker_accounts_ = std::make_unique<BrokerAccounts>(
        BrokerAccountsOptions{config_.topic_prefix, config_.broker_username}, *dynsec_);
    if (Status s = broker_accounts_->start(); !s) return s;
    credentials_port_ = broker_accounts_.get();
  }
  channel_ = std::make_unique<mqtt::MqttChannel>(channel_options, metrics_);

  twins::RuntimeOptions runtime_options;
  runtime_options.shards =
      config_.shards > 0 ? config_.shards : std::max(1u, std::thread::hardware_concurrency());
  runtime_options.policy = config_.policy;
  runtime_options.hibernate_after_s = config_.hibernate_after_s;
  runtime_options.max_hot_twins = config_.max_hot_twins;
  runtime_options.auto_provision = config_.auto_provision;
  runtime_options.ownership = cluster_.get();
  runtime_ = std::make_unique<twins::Runtime>(runtime_options, *store_, *channel_, *codec_, clock_,
                                              metrics_);
  if (Status s = runtime_->start(); !s) return s;
  if (cluster_) {
    // Its share of the free partitions first, so that devices and requests find them served.
    auto drain = [rt = runtime_.get(), store = store_.get()] {
      rt->barrier();   // every shard has handled what was posted before
      store->flush();  // and it is committed
    };
    if (Status s = cluster_->start(drain); !s) return s;
  }
  channel_->set_sink([rt = runtime_.get()](twins::DeviceInput in) { rt->deliver(std::move(in)); });
  if (device_auth_) {
    // A revoked device's connection ends now, not only its next one.
    device_auth_->on_revoked([ch = channel_.get()](const std::string& id) { ch->kick(id); });
  }
  channel_->start();

  HttpOptions http_options;
  http_options.host = http_host;
  http_options.port = http_port;
  http_options.server = config_.http_server;
  http_options.queries = config_.queries;
  http_options.tokens = config_.api_tokens;
  http_options.read_tokens = config_.api_read_tokens;
  http_options.feed = feed_.get();
  http_options.cluster = cluster_.get();
  twins::JobEngineOptions job_options;
  job_options.limits = config_.policy.limits;
  job_options.record_changes = config_.policy.record_changes;
  if (cluster_) {
    // Forwarded requests wait on these threads for their owner's answer (or for a new owner).
    http_options.server.blocking_threads = std::max(http_options.server.blocking_threads, 32);
    // Each job runs on the node of its id's partition and reaches other nodes' twins through them.
    cluster_jobs_ = std::make_unique<ClusterJobs>(*cluster_);
    job_options.cluster = {cluster_.get(), store_.get(), cluster_jobs_.get()};
  }
  jobs_ = std::make_unique<twins::JobEngine>(job_options, *runtime_, *store_, clock_, metrics_);
  if (Status s = jobs_->start(); !s) return s;
  http_options.jobs = jobs_.get();
  http_ = std::make_unique<HttpApi>(
      http_options, *runtime_, *store_, metrics_, [this] { return readiness(); },
      credentials_port_);
  if (Status s = http_->start(); !s) return s;
  log_info(std::string("doppeld: serving the API on ") +
           (config_.http_server.tls_cert.empty() ? "http://" : "https://") + http_host + ":" +
           std::to_string(http_->port()) + ", devices on " +
           (broker_ ? broker_->uri() : broker_uri_) + " (prefix '" + config_.topic_prefix +
           "'), store " + store_name() + ", " + std::to_string(runtime_options.shards) + " shards" +
           (cluster_ ? ", cluster node " + cluster_->incarnation() : std::string()) +
           (device_ca_ ? "; devices authenticate with certificates from the device CA " +
                             device_ca_->ca_file()
                       : std::string()));
  return Status::ok();
}

void Gateway::stop() {
  if (stopped_) return;
  stopped_ = true;
  // A cluster node hands its partitions over first, while its API still answers (requests for
  // them are refused as not_owner, and the node that forwarded them retries at the new owner).
  if (cluster_) cluster_->stop();
  if (http_) http_->stop();
  {
    std::lock_guard lock(prune_mu_);
    prune_stop_ = true;
  }
  prune_cv_.notify_all();
  if (pruner_.joinable()) pruner_.join();
  if (jobs_) jobs_->stop();  // no dispatch after this; what it sent is committed below
  if (cluster_jobs_) cluster_jobs_->stop();
  if (runtime_) runtime_->barrier();
  if (store_) store_->flush();  // commits, and hands the last publishes to the MQTT client
  if (channel_) channel_->stop(std::chrono::milliseconds(2000));
  if (runtime_) runtime_->stop();
  if (store_) {
    store_->flush();
    store_->close();
  }
  if (broker_) broker_->stop();
  credentials_port_ = nullptr;
  broker_accounts_.reset();
  if (dynsec_) dynsec_->stop();
  dynsec_.reset();
  device_auth_.reset();
  credentials_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  log_info("doppeld: stopped");
}

void Gateway::prune_loop() {
  // At start, then every minute: events older than the retention, and reported.updated events
  // beyond their cap, oldest first.
  while (true) {
    const auto cut = clock_.now_ms() - twins::seconds_to_ms(config_.history_retention_s);
    auto pruned = store_->prune_events(cut, config_.history_max_reported_events);
    if (!pruned) {
      log_warn("history: pruning failed (retrying in a minute): " + pruned.status().to_string());
    } else if (*pruned > 0) {
      log_info("history: pruned " + std::to_string(*pruned) + " events");
    }
    std::unique_lock lock(prune_mu_);
    if (prune_cv_.wait_for(lock, std::chrono::seconds(60), [this] { return prune_stop_; })) return;
  }
}

Readiness Gateway::readiness() const {
  Readiness r;
  r.store_open = store_ && store_->available();
  const auto link = channel_ ? channel_->link() : mqtt::MqttChannel::Link::kDown;
  r.broker_connected = link == mqtt::MqttChannel::Link::kUp;
  r.broker_subscribing = link == mqtt::MqttChannel::Link::kSubscribing;
  r.broker_refused = link == mqtt::MqttChannel::Link::kRefused;
  r.broker_dropping = channel_ && channel_->broker_dropping();
  r.broker_dropped = channel_ ? channel_->broker_dropped() : 0;
  if (broker_) r.broker_state = broker_->state();
  return r;
}

int Gateway::http_port() const { return http_ ? http_->port() : -1; }

std::string Gateway::broker_uri() const { return broker_ ? broker_->uri() : broker_uri_; }

}  // namespace doppel::gateway
