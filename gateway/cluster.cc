#include "gateway/cluster.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <map>

#include "gateway/http_problems.h"
#include "storage/postgres/lease_table.h"
#include "storage/postgres/postgres_store.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

constexpr const char* kForwardedHeader = "Doppel-Forwarded";
constexpr int64_t kMaxSignatureAgeMs = 60'000;

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 15]);
  }
  return out;
}

// "http://host:port" -> host, port.
bool parse_advertise(const std::string& url, std::string& host, std::string& port) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string rest = url.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return false;
  host = rest.substr(0, colon);
  port = rest.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool valid_node_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Headers that belong to one connection, or that the forwarding node sets itself.
bool hop_by_hop(std::string_view name) {
  for (const char* h : {"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Host",
                        "X-Request-Id", kForwardedHeader, "Date", "Server", "TE", "Upgrade"}) {
    if (iequals(name, h)) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<ClusterNode>> ClusterNode::open(ClusterConfig config,
                                                       const std::string& store_uri,
                                                       storage::PostgresTwinStore& store,
                                                       Metrics& metrics) {
  if (!valid_node_id(config.node_id)) {
    return Status(StatusCode::kInvalidArgument,
                  "--node-id must be 1 to 64 letters, digits, '-', '_' or '.' (got '" +
                      config.node_id + "')");
  }
  std::string host, port;
  if (!parse_advertise(config.advertise, host, port)) {
    return Status(StatusCode::kInvalidArgument,
                  "--advertise must be http://HOST:PORT, the address other nodes reach this one's "
                  "HTTP API at (got '" +
                      config.advertise + "')");
  }
  if (config.secret.size() < 16) {
    return Status(StatusCode::kInvalidArgument,
                  "the cluster secret (--cluster-secret-file) must be at least 16 bytes, the same "
                  "file on every node; make one with: head -c 32 /dev/urandom | base64 > F");
  }
  auto table = storage::PostgresLeaseTable::open(store_uri);
  if (!table) return Status(table.status().code(), "cluster leases: " + table.status().message());
  (*table)->set_advertise(config.advertise);
  return std::unique_ptr<ClusterNode>(
      new ClusterNode(std::move(config), std::move(*table), store, metrics));
}

namespace {
std::string make_incarnation(const std::string& node_id) {
  unsigned char nonce[4];
  if (RAND_bytes(nonce, sizeof nonce) != 1) {
    const auto t = static_cast<uint64_t>(unix_ms());
    for (size_t i = 0; i < sizeof nonce; ++i) nonce[i] = static_cast<unsigned char>(t >> (8 * i));
  }
  return node_id + "#" + hex(nonce, sizeof nonce);
}
}  // namespace

ClusterNode::ClusterNode(ClusterConfig config, std::unique_ptr<storage::PostgresLeaseTable> table,
                         storage::PostgresTwinStore& store, Metrics& metrics)
    : config_(std::move(config)),
      incarnation_(make_incarnation(config_.node_id)),
      table_(std::move(table)),
      store_(store),
      keeper_(*table_, incarnation_, twins::kPartitions, config_.leases),
      acquired_(&metrics.counter("doppel_cluster_leases_acquired_total",
                                 "Partition leases this node acquired")),
      lost_(&metrics.counter("doppel_cluster_leases_lost_total",
                             "Partition leases this node lost without giving them up (another "
                             "node took them after they expired)")),
      released_(&metrics.counter("doppel_cluster_leases_released_total",
                                 "Partition leases this node gave up (rebalancing, leaving)")),
      renewed_late_(&metrics.counter(
          "doppel_cluster_renewals_late_total",
          "Lease rounds that started more than two renewal intervals after the one before")),
      round_failures_(&metrics.counter("doppel_cluster_round_failures_total",
                                       "Lease rounds that failed (database unreachable)")),
      forwards_(&metrics.counter("doppel_cluster_forwards_total",
                                 "API requests forwarded to the node that owns their twin")),
      forward_failures_(
          &metrics.counter("doppel_cluster_forward_failures_total",
                           "Forwarded API requests the owner did not answer (answered 503 here)")) {
  metrics.gauge_fn("doppel_cluster_partitions_served", "Partitions this node serves now",
                   [this] { return static_cast<double>(serving_count()); });
  keeper_.drained = [this](uint32_t shard) {
    std::lock_guard lock(mu_);
    auto done = std::find(drained_.begin(), drained_.end(), shard);
    if (done != drained_.end()) {
      drained_.erase(done);
      releasing_.push_back(shard);  // given up next, in this round
      return true;
    }
    if (std::find(drain_asked_.begin(), drain_asked_.end(), shard) == drain_asked_.end()) {
      drain_asked_.push_back(shard);
    }
    return false;
  };
  keeper_.on_acquired = [this](uint32_t shard, uint64_t epoch) {
    store_.set_epoch(shard, epoch);  // before the keeper lets anyone serve it
    acquired_->inc();
    std::lock_guard lock(mu_);
    gained_.push_back(shard);
  };
  keeper_.on_lost = [this](uint32_t shard) {
    serve_until_[shard].store(0);
    store_.set_epoch(shard, 0);
    std::lock_guard lock(mu_);
    auto given = std::find(releasing_.begin(), releasing_.end(), shard);
    if (given != releasing_.end() || leaving_) {
      if (given != releasing_.end()) releasing_.erase(given);
      released_->inc();
    } else {
      lost_->inc();
      log_warn("cluster: lost partition " + std::to_string(shard) +
               " (its lease could not be renewed in time; another node owns it now)");
    }
  };
}

ClusterNode::~ClusterNode() { stop(); }

Status ClusterNode::start(std::function<void()> drain) {
  drain_ = std::move(drain);
  round();
  if (!last_error_.empty()) {
    return Status(StatusCode::kUnavailable,
                  "cluster: the first lease round failed: " + last_error_);
  }
  log_info("cluster: node " + incarnation_ + " serves " + std::to_string(serving_count()) + " of " +
           std::to_string(twins::kPartitions) + " partitions at start");
  thread_ = std::thread([this] {
    name_this_thread("cluster-lease");
    loop();
  });
  return Status::ok();
}

void ClusterNode::loop() {
  while (true) {
    {
      std::unique_lock lock(stop_mu_);
      if (stop_cv_.wait_for(lock, std::chrono::milliseconds(config_.leases.renew_every),
                            [this] { return stopping_; })) {
        return;
      }
    }
    round();
  }
}

void ClusterNode::round() {
  const int64_t now = steady_ms();
  if (last_round_ms_ != 0 && now - last_round_ms_ > 2 * config_.leases.renew_every) {
    renewed_late_->inc();
  }
  last_round_ms_ = now;
  Status s = keeper_.tick(now);
  // What may be served, where the shard threads read it.
  std::array<int64_t, twins::kPartitions> until{};
  for (const auto& [shard, u] : keeper_.serving_until()) until[shard] = u;
  for (size_t p = 0; p < until.size(); ++p) serve_until_[p].store(until[p]);

  // Partitions the keeper wants to give up are no longer served: drain what was queued for them,
  // and the next round releases them.
  std::vector<uint32_t> asked;
  {
    std::lock_guard lock(mu_);
    asked.swap(drain_asked_);
  }
  if (!asked.empty()) {
    if (drain_) drain_();
    std::lock_guard lock(mu_);
    drained_.insert(drained_.end(), asked.begin(), asked.end());
  }

  refresh(s);
}

void ClusterNode::refresh(const Status& round) {
  auto leases = table_->leases();
  auto members = table_->members();
  std::lock_guard lock(mu_);
  if (!round || !leases || !members) {
    const Status& failed = !round ? round : (!leases ? leases.status() : members.status());
    round_failures_->inc();
    if (last_error_ != failed.message()) {
      log_warn(
          "cluster: lease round failed (every partition stops being served when its lease "
          "would end): " +
          failed.to_string());
    }
    last_error_ = failed.message();
    return;
  }
  if (!last_error_.empty()) log_info("cluster: lease rounds succeed again");
  last_error_.clear();
  for (const twins::ShardLease& l : *leases) {
    if (l.shard < owner_.size()) owner_[l.shard] = l.expired ? std::string() : l.owner;
  }
  members_.clear();
  std::map<std::string, size_t> owned;
  for (const auto& o : owner_) {
    if (!o.empty()) ++owned[o];
  }
  members_doc_ = twins::json::array();
  for (const storage::ClusterMember& m : *members) {
    if (m.alive) members_.emplace_back(m.node, m.advertise);
    members_doc_.push_back({{"node", m.node},
                            {"advertise", m.advertise},
                            {"state", m.alive ? "alive" : "dead"},
                            {"last_heartbeat_s", m.since_heartbeat_s},
                            {"up_s", m.up_s},
                            {"partitions", owned[m.node]},
                            {"self", m.node == incarnation_}});
  }
}

void ClusterNode::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!drain_) return;  // never started
  for (auto& u : serve_until_) u.store(0);
  drain_();
  {
    std::lock_guard lock(mu_);
    leaving_ = true;
  }
  if (Status s = keeper_.leave(); !s) {
    log_warn(
        "cluster: leaving failed (the other nodes take this node's partitions when its "
        "leases expire): " +
        s.to_string());
  } else {
    log_info("cluster: node " + incarnation_ + " left; its partitions are free for the others");
  }
  // The API stays up two more rounds: the other nodes take the partitions and learn their new
  // owners at their next round, and until then they still forward requests here, which this node
  // now forwards on (or answers not_owner, which they retry). Closing at once would reset those
  // connections, and a forward whose answer is lost cannot be retried safely.
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * config_.leases.renew_every));
}

bool ClusterNode::serves(uint32_t partition) const {
  return partition < serve_until_.size() && steady_ms() < serve_until_[partition].load();
}

std::vector<uint32_t> ClusterNode::serving() const {
  const int64_t now = steady_ms();
  std::vector<uint32_t> out;
  for (uint32_t p = 0; p < serve_until_.size(); ++p) {
    if (now < serve_until_[p].load()) out.push_back(p);
  }
  return out;
}

size_t ClusterNode::serving_count() const { return serving().size(); }

std::vector<uint32_t> ClusterNode::take_gained() {
  std::lock_guard lock(mu_);
  std::vector<uint32_t> out;
  out.swap(gained_);
  return out;
}

std::string ClusterNode::signature(const std::string& node, const std::string& at,
                                   const HttpRequest& req, const std::string& request_id) const {
  const std::string data = node + "\n" + at + "\n" + req.method + "\n" + req.target + "\n" +
                           request_id + "\n" + std::to_string(req.body.size());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), config_.secret.data(), static_cast<int>(config_.secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return hex(mac, len);
}

std::optional<bool> ClusterNode::forwarded(const HttpRequest& req,
                                           const std::string& request_id) const {
  auto header = req.header(kForwardedHeader);
  if (!header) return std::nullopt;
  // "<node>;<unix ms>;<hex HMAC>"
  const size_t a = header->find(';');
  const size_t b = a == std::string::npos ? a : header->find(';', a + 1);
  if (b == std::string::npos) return false;
  const std::string node = header->substr(0, a);
  const std::string at = header->substr(a + 1, b - a - 1);
  const std::string mac = header->substr(b + 1);
  int64_t sent = 0;
  try {
    sent = std::stoll(at);
  } catch (const std::exception&) {
    return false;
  }
  if (std::llabs(unix_ms() - sent) > kMaxSignatureAgeMs) return false;
  const std::string want = signature(node, at, req, request_id);
  return want.size() == mac.size() && CRYPTO_memcmp(want.data(), mac.data(), want.size()) == 0;
}

std::string ClusterNode::owner_of(uint32_t partition) const {
  std::lock_guard lock(mu_);
  return partition < owner_.size() ? owner_[partition] : std::string();
}

std::optional<HttpResponse> ClusterNode::forward(const HttpRequest& req,
                                                 const std::string& request_id,
                                                 uint32_t partition) {
  std::string owner, address;
  {
    std::lock_guard lock(mu_);
    owner = partition < owner_.size() ? owner_[partition] : std::string();
    for (const auto& [node, addr] : members_) {
      if (node == owner) address = addr;
    }
  }
  if (owner.empty() || owner == incarnation_ || address.empty()) {
    // A node that is leaving runs no more rounds: it reads who took its partitions itself.
    bool leaving = false;
    {
      std::lock_guard lock(stop_mu_);
      leaving = stopping_;
    }
    if (leaving) refresh(Status::ok());
    return std::nullopt;
  }
  std::string host, port;
  if (!parse_advertise(address, host, port)) return std::nullopt;
  forwards_->inc();

  const std::string at = std::to_string(unix_ms());
  http::request<http::string_body> out;
  out.method_string(req.method);
  out.target(req.target);
  out.version(11);
  for (const auto& [name, value] : req.headers) {
    if (!hop_by_hop(name)) out.set(name, value);
  }
  out.set(http::field::host, host + ":" + port);
  out.set("X-Request-Id", request_id);
  out.set(kForwardedHeader,
          incarnation_ + ";" + at + ";" + signature(incarnation_, at, req, request_id));
  out.set(http::field::connection, "close");
  out.body() = req.body;
  out.prepare_payload();

  asio::io_context io;
  beast::tcp_stream stream(io);
  try {
    asio::ip::tcp::resolver resolver(io);
    stream.expires_after(std::chrono::seconds(2));
    stream.connect(resolver.resolve(host, port));
  } catch (const std::exception&) {
    forward_failures_->inc();
    return std::nullopt;  // nothing sent: the owner is gone or not up yet
  }
  try {
    stream.expires_after(std::chrono::seconds(30));
    http::write(stream, out);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream, buffer, parser);
    auto& in = parser.get();
    beast::error_code ignored;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);

    HttpResponse r;
    r.status = static_cast<int>(in.result_int());
    for (const auto& field : in) {
      const std::string name(field.name_string());
      if (iequals(name, "Content-Type")) {
        r.content_type = std::string(field.value());
      } else if (!hop_by_hop(name)) {
        r.headers.emplace_back(name, std::string(field.value()));
      }
    }
    if (r.status == 503 && in.find(kNotOwnerHeader) != in.end()) return std::nullopt;
    r.body = std::move(in.body());
    r.headers.emplace_back("Doppel-Served-By", owner);
    return r;
  } catch (const std::exception& e) {
    forward_failures_->inc();
    HttpResponse r =
        problem_response(503, "not_owner",
                         "the request was forwarded to node " + owner + " (" + address +
                             "), the owner of the twin's partition " + std::to_string(partition) +
                             ", and its answer was lost (" + e.what() +
                             "); it may have been applied: read the twin before you retry",
                         req.path);
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
}

twins::json ClusterNode::describe() const {
  std::lock_guard lock(mu_);
  size_t owned = 0;
  for (const auto& o : owner_) owned += o.empty() ? 0 : 1;
  return twins::json{
      {"node", incarnation_},
      {"node_id", config_.node_id},
      {"advertise", config_.advertise},
      {"serving", serving_count()},
      {"lease_ms", config_.leases.lease},
      {"renew_every_ms", config_.leases.renew_every},
      {"safety_margin_ms", config_.leases.safety_margin},
      {"members", members_doc_},
      {"partitions",
       {{"total", twins::kPartitions}, {"owned", owned}, {"unowned", twins::kPartitions - owned}}},
      {"last_error", last_error_.empty() ? twins::json(nullptr) : twins::json(last_error_)}};
}

}  // namespace doppel::gateway
