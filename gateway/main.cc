// doppeld: the Doppel device twin gateway. Parses flags (or a config file), runs the Gateway
// until SIGINT/SIGTERM, then shuts it down in order.
#include <signal.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "gateway/gateway.h"
#include "twins/log.h"
#include "twins/query.h"

namespace {

doppel::LogLevel to_level(const std::string& s) {
  if (s == "trace") return doppel::LogLevel::kTrace;
  if (s == "debug") return doppel::LogLevel::kDebug;
  if (s == "warn") return doppel::LogLevel::kWarn;
  if (s == "error") return doppel::LogLevel::kError;
  return doppel::LogLevel::kInfo;
}

void install_logging(const std::string& level) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %v");
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::trace);  // a log file or pipe sees each line when it happens
  doppel::set_log_sink(
      [](doppel::LogLevel l, std::string_view m) {
        switch (l) {
          case doppel::LogLevel::kTrace:
            spdlog::trace("{}", m);
            break;
          case doppel::LogLevel::kDebug:
            spdlog::debug("{}", m);
            break;
          case doppel::LogLevel::kInfo:
            spdlog::info("{}", m);
            break;
          case doppel::LogLevel::kWarn:
            spdlog::warn("{}", m);
            break;
          case doppel::LogLevel::kError:
            spdlog::error("{}", m);
            break;
        }
      },
      to_level(level));
}

}  // namespace

int main(int argc, char** argv) {
  doppel::gateway::GatewayConfig cfg;
  auto& p = cfg.policy;
  std::string durability = "normal";
  std::string log_level = "info";
  double stale_after_s = p.default_stale_after_s;

  CLI::App app{
      "doppeld - the Doppel device twin gateway.\n\n"
      "Devices talk MQTT (twins/{id}/reported, /get, /status, /commands/{cmd}/result); operators\n"
      "talk HTTP (/v1/twins/...). With no --broker, doppeld starts and supervises its own\n"
      "Mosquitto on 127.0.0.1:1883. State lives in <data>/doppel.db (SQLite, WAL).\n"
      "Every flag can also be set in a TOML/INI file given by --config (key = flag name)."};
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.get_formatter()->column_width(40);

  app.add_option("--broker", cfg.broker,
                 "external broker URL, tcp://host:port or ssl://host:port (default: embedded "
                 "Mosquitto)");
  app.add_option("--broker-bind", cfg.broker_bind,
                 "address the embedded broker listens on for devices (e.g. 0.0.0.0; anything "
                 "but loopback needs --device-auth)")
      ->capture_default_str();
  app.add_option("--broker-port", cfg.broker_port, "port of the embedded broker")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--mosquitto", cfg.mosquitto,
                 "mosquitto binary for the embedded broker (default: PATH, /usr/sbin/mosquitto)");
  app.add_option("--broker-username", cfg.broker_username, "username for the broker");
  app.add_option("--broker-password", cfg.broker_password, "password for the broker");
  app.add_flag("--broker-relay", cfg.broker_relay,
               "--broker loads doppeld's broker plugin (doppel_broker_plugin.so, beside doppeld) "
               "with plugin_opt_relay_user set to --broker-username: doppeld then hands it QoS 0 "
               "messages (the AWS dialect's answers) many to a packet, which costs the broker one "
               "read per batch instead of per message. The embedded broker always does this");
  app.add_option("--broker-ca-file", cfg.broker_ca_file,
                 "CA certificate to verify the broker's TLS certificate (ssl:// brokers)");
  app.add_option("--broker-tls-cert", cfg.broker_tls_cert,
                 "embedded broker: serve MQTT over TLS with this certificate (PEM) ...");
  app.add_option("--broker-tls-key", cfg.broker_tls_key, "... and this private key (PEM)");
  std::string device_auth_mode;
  auto* device_auth =
      app.add_option("--device-auth", device_auth_mode,
                     "refuse anonymous devices. password (the default): PUT /v1/twins/{id} "
                     "{\"credentials\": true} issues a password; x509 (embedded broker only): "
                     "devices connect over TLS (--broker-tls-cert/--broker-tls-key) with a "
                     "client certificate from the device CA, PUT {\"certificate\": true} issues "
                     "one. The ACL confines each device to twins/{id}/# and $aws/things/{id}/#. "
                     "With --broker (and so --cluster) the accounts live in that broker's "
                     "dynamic-security plugin, and --broker-username must hold its admin role")
          ->expected(0, 1)
          ->check(CLI::IsMember({"", "password", "x509"}));
  app.add_option("--device-ca-cert", cfg.device_ca_cert,
                 "--device-auth x509: the CA that signs device certificates (PEM; default: one "
                 "created in <data>/device-ca at first start) ...");
  app.add_option("--device-ca-key", cfg.device_ca_key, "... and its unencrypted private key");
  app.add_option("--api-token", cfg.api_tokens,
                 "bearer token with full API access (repeatable; better in a --config file)");
  app.add_option("--api-read-token", cfg.api_read_tokens,
                 "bearer token that may only GET (repeatable)");
  app.add_option("--client-id", cfg.client_id, "the gateway's MQTT client id (its session)")
      ->capture_default_str();
  app.add_option("--topic-prefix", cfg.topic_prefix, "first topic level of every device topic")
      ->capture_default_str();
  app.add_option("--http", cfg.http, "HTTP listen address HOST:PORT")->capture_default_str();
  auto& hs = cfg.http_server;
  double header_timeout_s = 10, idle_timeout_s = 60, body_timeout_s = 30;
  app.add_option("--http-max-connections", hs.max_connections,
                 "open HTTP connections at most; more are answered 503 and closed")
      ->capture_default_str();
  app.add_option("--http-max-connections-per-ip", hs.max_connections_per_ip,
                 "open HTTP connections per client address at most")
      ->capture_default_str();
  app.add_option("--http-header-timeout-s", header_timeout_s,
                 "a request's headers must arrive within this long (slow clients get 408)")
      ->capture_default_str();
  app.add_option("--http-idle-timeout-s", idle_timeout_s,
                 "a keep-alive connection idle this long is closed")
      ->capture_default_str();
  app.add_option("--http-body-timeout-s", body_timeout_s,
                 "a request's body must arrive within this long (and an answer be read)")
      ->capture_default_str();
  app.add_option("--http-stream-buffer-bytes", hs.stream_buffer_bytes,
                 "a streaming client's unsent output at most; a slower reader is disconnected")
      ->capture_default_str()
      ->check(CLI::Range(size_t{4096}, size_t{1} << 30));
  app.add_option("--http-max-streams", hs.max_streams,
                 "streaming responses (GET /v1/events as SSE) open at once; more get 503")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--http-max-streams-per-ip", hs.max_streams_per_ip,
                 "streaming responses open at once from one client address; more get 429")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--http-tls-cert", hs.tls_cert,
                 "serve the API over HTTPS with this certificate chain (PEM) ...")
      ->check(CLI::ExistingFile);
  app.add_option("--http-tls-key", hs.tls_key, "... and this private key (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--data", cfg.data_dir, "data directory (SQLite file, broker config)")
      ->capture_default_str();
  app.add_option("--store", cfg.store,
                 "keep twins in PostgreSQL instead of the SQLite file in --data: a libpq URI, "
                 "postgresql://user[:password]@host:port/db (the schema is created and migrated "
                 "at start; put a password in a --config file or PGPASSWORD, not on the command "
                 "line)")
      ->check([](const std::string& uri) -> std::string {
        if (uri.rfind("postgresql://", 0) == 0 || uri.rfind("postgres://", 0) == 0) return "";
        return "--store takes a PostgreSQL URI, postgresql://user@host:port/db";
      });
  std::string cluster_secret_file;
  app.add_flag("--cluster", cfg.cluster,
               "run as one node of a cluster of doppelds sharing --store (PostgreSQL), the broker "
               "and a secret: twins are spread over the nodes by partition leases, any node "
               "answers any request (docs/scale-out.md); needs --node-id, --advertise and "
               "--cluster-secret-file");
  app.add_option("--node-id", cfg.node_id,
                 "this node's name in the cluster (letters, digits, '-', '_', '.'), unique per "
                 "node; it is also appended to --client-id");
  app.add_option("--advertise", cfg.advertise,
                 "http://HOST:PORT where the other nodes reach this node's API (they forward "
                 "requests for its twins there)");
  app.add_option("--cluster-secret-file", cluster_secret_file,
                 "a file, the same on every node, whose contents (at least 16 bytes) sign the "
                 "requests nodes forward to each other")
      ->check(CLI::ExistingFile);
  app.add_option("--lease-s", cfg.lease_s,
                 "how long a node's hold on a partition lasts without renewal; renewed every "
                 "fifth of it, and served until a fifth of it before its end (a failed node's "
                 "twins move within about this long)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 600.0));
  app.add_option("--durability", durability,
                 "SQLite synchronous level: normal survives a process crash, full also an OS "
                 "crash (PostgreSQL always commits synchronously)")
      ->capture_default_str()
      ->check(CLI::IsMember({"normal", "full"}));
  int64_t commit_gather_us = cfg.commit_gather.count();
  app.add_option("--commit-gather-us", commit_gather_us,
                 "under a steady stream of writes, how long a group commit may wait for more "
                 "writes to join it (only while two or more are expected within it; a lone write, "
                 "or an operator's request, is committed at once); 0: never wait")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{100'000}));
  app.add_option("--shards", cfg.shards, "runtime shards (default: number of cores)");
  app.add_option("--stale-after-s", stale_after_s, "default staleness window, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reconcile-timeout-s", p.reconcile_timeout_s,
                 "wait before re-sending a delta, seconds (doubles each retry, max 10 min)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reconcile-max-attempts", p.reconcile_max_attempts,
                 "delta sends before reconcile: failed")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--command-ack-timeout-s", p.command_ack_timeout_s,
                 "wait for a command result before re-delivering, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--command-max-attempts", p.command_max_attempts,
                 "deliveries before a command is timed_out")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--command-queue-max", p.command_queue_max,
                 "unfinished commands per twin; more get 429")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--command-history", p.finished_commands_kept,
                 "finished commands kept per twin (oldest dropped)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--hibernate-after-s", cfg.hibernate_after_s,
                 "idle time before a twin leaves memory, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-hot-twins", cfg.max_hot_twins, "twins held in memory at most (LRU)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000'000));
  app.add_option("--auto-provision", cfg.auto_provision,
                 "desired/commands on an unknown twin create it (false: 404)")
      ->capture_default_str();
  app.add_option("--max-document-bytes", p.limits.max_document_bytes,
                 "limit for desired and reported, each, serialized")
      ->capture_default_str()
      ->check(CLI::Range(256, 16 << 20));
  app.add_option("--max-depth", p.limits.max_depth, "nesting limit of state documents")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_flag("--aws-documents", p.aws_documents,
               "AWS-dialect devices: publish $aws/things/{id}/shadow/update/documents after every "
               "update (off: the AWS SDKs do not subscribe to it; it costs about a third of their "
               "ingest)");
  app.add_option("--history", p.record_changes,
                 "record every committed change in the change feed (GET /v1/events, history)")
      ->capture_default_str();
  app.add_option("--history-retention-s", cfg.history_retention_s,
                 "change events older than this are pruned, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--history-max-reported-events", cfg.history_max_reported_events,
                 "at most this many reported.updated events are kept (oldest pruned first)")
      ->capture_default_str();
  app.add_option("--index", cfg.query_indexes,
                 "keep an index on this fleet-query field (repeatable), e.g. --index "
                 "reported.fw --index tags.site: equality and range queries on it, and order_by "
                 "it, read the index instead of every twin; created once and kept; each costs "
                 "some work per write (doppel-bench -s query)")
      ->check([](const std::string& name) {
        auto f = doppel::twins::parse_query_field(name);
        return f ? std::string() : f.status().message();
      });
  double query_timeout_s = 10;
  app.add_option("--query-timeout-s", query_timeout_s,
                 "a fleet query (GET /v1/twins?q=, /v1/fleet/count) still running after this "
                 "long is stopped and answered 503; index what it filters on (--index) instead")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--query-max-per-client", cfg.queries.per_client,
                 "fleet queries one client (token, or address when the API is open) runs at "
                 "once; more are answered 429")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--query-max-groups", cfg.queries.max_groups,
                 "GET /v1/fleet/count?group_by= answers at most this many groups, the largest "
                 "(\"truncated\": true when there are more)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  app.add_option("--http-query-threads", hs.query_threads,
                 "threads that run fleet queries (apart from those that serve the change feed, "
                 "history and everything else that reads)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  CLI11_PARSE(app, argc, argv);
  cfg.durability_full = durability == "full";
  cfg.commit_gather = std::chrono::microseconds(commit_gather_us);
  cfg.device_auth = device_auth->count() > 0;
  cfg.device_auth_x509 = device_auth_mode == "x509";
  if (cfg.cluster) {
    std::string missing;
    if (cfg.node_id.empty()) missing += " --node-id";
    if (cfg.advertise.empty()) missing += " --advertise";
    if (cluster_secret_file.empty()) missing += " --cluster-secret-file";
    if (!missing.empty()) {
      std::cerr << "--cluster needs" << missing << " (docs/scale-out.md)\n";
      return 2;
    }
    std::ifstream in(cluster_secret_file, std::ios::binary);
    std::ostringstream secret;
    secret << in.rdbuf();
    cfg.cluster_secret = secret.str();
    while (!cfg.cluster_secret.empty() &&
           (cfg.cluster_secret.back() == '\n' || cfg.cluster_secret.back() == '\r')) {
      cfg.cluster_secret.pop_back();
    }
  }
  hs.header_timeout = std::chrono::milliseconds(doppel::twins::seconds_to_ms(header_timeout_s));
  hs.idle_timeout = std::chrono::milliseconds(doppel::twins::seconds_to_ms(idle_timeout_s));
  hs.body_timeout = std::chrono::milliseconds(doppel::twins::seconds_to_ms(body_timeout_s));
  p.default_stale_after_s = stale_after_s;
  cfg.queries.timeout = std::chrono::milliseconds(doppel::twins::seconds_to_ms(query_timeout_s));
  install_logging(log_level);

  // Block the shutdown signals in every thread; this one waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  doppel::gateway::Gateway gateway(cfg);
  if (doppel::Status s = gateway.start(); !s) {
    spdlog::error("doppeld cannot start: {}", s.message());
    gateway.stop();
    return 1;
  }
  spdlog::info("doppeld ready: API {}://{}/v1/twins, metrics /metrics, broker {}, data {}",
               hs.tls_cert.empty() ? "http" : "https",
               cfg.http.substr(0, cfg.http.rfind(':')) + ":" + std::to_string(gateway.http_port()),
               gateway.broker_uri(), cfg.data_dir);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("doppeld: {} received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  gateway.stop();
  return 0;
}
