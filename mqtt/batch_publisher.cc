#include "mqtt/batch_publisher.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mqtt/mqtt311.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::mqtt {

namespace {

constexpr size_t kMaxTopicBytes = 65535;
constexpr size_t kMaxRemaining = 268'435'455;

}  // namespace

void append_relay_record(std::string& out, std::string_view topic, std::string_view payload) {
  const size_t t = topic.size();
  const size_t n = payload.size();
  const char head[2] = {static_cast<char>((t >> 8) & 0xff), static_cast<char>(t & 0xff)};
  out.append(head, 2);
  out.append(topic);
  const char length[4] = {static_cast<char>((n >> 24) & 0xff), static_cast<char>((n >> 16) & 0xff),
                          static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)};
  out.append(length, 4);
  out.append(payload);
}

BatchPublisher::BatchPublisher(BatchPublisherOptions options) : options_(std::move(options)) {}

void BatchPublisher::wrap_relay() {
  if (relay_.empty()) return;
  mqtt311::append_publish(queued_, options_.relay_topic, relay_, 0, 0);
  relay_.clear();
}

BatchPublisher::~BatchPublisher() { stop(std::chrono::milliseconds(0)); }

void BatchPublisher::start() {
  thread_ = std::thread([this] {
    name_this_thread("mqtt-batch");
    run();
  });
}

void BatchPublisher::stop(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    drain_until_ = std::chrono::steady_clock::now() + timeout;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool BatchPublisher::publish(std::string_view topic, std::string_view payload, int qos) {
  if (!connected() || topic.empty() || topic.size() > kMaxTopicBytes ||
      2 + topic.size() + 2 + payload.size() > kMaxRemaining) {
    return false;
  }
  bool wake;
  {
    std::lock_guard lock(mu_);
    // Again under the lock: connection_lost() takes the unacknowledged messages under it, and
    // none may join them after it has.
    if (stopping_ || !connected_.load(std::memory_order_relaxed) ||
        queued_.size() + relay_.size() + payload.size() > options_.max_queued_bytes) {
      return false;
    }
    wake = queued_.empty() && relay_.empty();
    if (qos == 0 && !options_.relay_topic.empty()) {
      if (!relay_.empty() &&
          relay_.size() + 6 + topic.size() + payload.size() > options_.max_relay_bytes) {
        wrap_relay();
      }
      append_relay_record(relay_, topic, payload);
    } else {
      uint16_t packet_id = 0;
      if (qos > 0) {
        // PUBACKs come in the order of the PUBLISHes (§4.6), so the ids in use are the window of
        // the last `unacked_.size()`: below 65,536 of them, the next id is free.
        if (unacked_.size() >= std::min<size_t>(options_.max_unacked, 65535) ||
            unacked_bytes_ + payload.size() > options_.max_queued_bytes) {
          return false;
        }
        if (++last_packet_id_ == 0) last_packet_id_ = 1;
        packet_id = last_packet_id_;
        unacked_.push_back({packet_id, std::string(topic), std::string(payload)});
        unacked_bytes_ += topic.size() + payload.size();
      }
      mqtt311::append_publish(queued_, topic, payload, qos > 0 ? 1 : 0, packet_id);
    }
  }
  // One wake-up per batch: while the writer is busy, publishes only append.
  if (wake) cv_.notify_one();
  return true;
}

size_t BatchPublisher::unacked() const {
  std::lock_guard lock(mu_);
  return unacked_.size();
}

bool BatchPublisher::read_acks(int fd) {
  char buffer[16384];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n == 0) return false;  // an orderly close
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
      break;
    }
    received_.append(buffer, static_cast<size_t>(n));
    if (static_cast<size_t>(n) < sizeof buffer) break;
  }
  std::vector<uint16_t> acked;
  size_t at = 0;
  while (true) {
    int type = 0;
    std::string_view body;
    const size_t used = mqtt311::next_packet(std::string_view(received_).substr(at), &type, &body);
    if (used == mqtt311::kMalformed) return false;
    if (used == 0) break;
    at += used;
    // Anything else the broker may send a client that never subscribes (PINGRESP) is dropped.
    if (const int id = mqtt311::puback_id(body); type == 4 && id >= 0) {
      acked.push_back(static_cast<uint16_t>(id));
    }
  }
  received_.erase(0, at);
  if (acked.empty()) return true;
  std::lock_guard lock(mu_);
  for (const uint16_t id : acked) {
    // In order, so the first one; a broker that acknowledged out of order is searched.
    auto it = !unacked_.empty() && unacked_.front().packet_id == id
                  ? unacked_.begin()
                  : std::find_if(unacked_.begin(), unacked_.end(),
                                 [id](const Sent& m) { return m.packet_id == id; });
    if (it == unacked_.end()) continue;
    unacked_bytes_ -= it->topic.size() + it->payload.size();
    unacked_.erase(it);
  }
  return true;
}

void BatchPublisher::connection_lost() {
  std::vector<Unacknowledged> back;
  {
    std::lock_guard lock(mu_);
    connected_.store(false, std::memory_order_release);
    queued_.clear();  // QoS 0: what was queued for a dead connection is gone; QoS 1 is below
    relay_.clear();
    back.reserve(unacked_.size());
    for (Sent& m : unacked_) back.push_back({std::move(m.topic), std::move(m.payload)});
    unacked_.clear();
    unacked_bytes_ = 0;
  }
  received_.clear();
  if (!back.empty() && options_.handback) {
    log_warn("batch publisher: " + std::to_string(back.size()) +
             " QoS 1 messages not acknowledged when the connection ended go through the main "
             "connection");
    options_.handback(std::move(back));
  }
}

int BatchPublisher::open_connection() {
  const auto fail = [this](int fd, const std::string& why) {
    if (fd >= 0) ::close(fd);
    if (why != last_error_) {
      log_warn("batch publisher: cannot connect to " + options_.host + ":" +
               std::to_string(options_.port) + ": " + why + " (retrying; publishes go through " +
               "the main connection meanwhile)");
      last_error_ = why;
    }
    return -1;
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(options_.host.c_str(), std::to_string(options_.port).c_str(),
                                   &hints, &found);
      rc != 0) {
    return fail(-1, ::gai_strerror(rc));
  }
  int fd = -1;
  std::string why = "no address";
  for (const addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    // A broker that stops reading must not hang the writer (nor stop()) for ever.
    const timeval timeout{5, 0};
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) return fail(-1, why);
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!write_all(fd,
                 mqtt311::connect_packet(options_.client_id, options_.username, options_.password,
                                         static_cast<uint16_t>(options_.keepalive.count())))) {
    return fail(fd, "sending CONNECT failed");
  }
  unsigned char connack[4];
  if (!mqtt311::read_exact(fd, reinterpret_cast<char*>(connack), sizeof connack)) {
    return fail(fd, "no CONNACK");
  }
  if (int code = 0; !mqtt311::connack_accepted(connack, &code)) {
    return fail(fd, code < 0 ? "not an MQTT CONNACK"
                             : "the broker refused the connection (CONNACK code " +
                                   std::to_string(code) + ": check the gateway's credentials)");
  }
  if (!last_error_.empty()) log_info("batch publisher: connected again");
  last_error_.clear();
  return fd;
}

void BatchPublisher::run() {
  using Clock = std::chrono::steady_clock;
  auto backoff = std::chrono::milliseconds(100);
  std::string batch;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    const int fd = open_connection();
    if (fd < 0) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, backoff, [this] { return stopping_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      continue;
    }
    backoff = std::chrono::milliseconds(100);
    connected_.store(true, std::memory_order_release);
    auto last_write = Clock::now();
    bool ok = true;
    while (ok) {
      bool stop_now = false;
      {
        std::unique_lock lock(mu_);
        // At least once a second, to notice a connection the broker closed (below).
        const auto until =
            std::min(last_write + options_.keepalive / 2, Clock::now() + std::chrono::seconds(1));
        cv_.wait_until(lock, until,
                       [this] { return stopping_ || !queued_.empty() || !relay_.empty(); });
        wrap_relay();
        batch.swap(queued_);
        stop_now = stopping_;
      }
      if (!batch.empty()) {
        ok = write_all(fd, batch);
        batches_.fetch_add(1, std::memory_order_relaxed);
        batch.clear();
        last_write = Clock::now();
      } else if (!stop_now && Clock::now() >= last_write + options_.keepalive / 2) {
        static const std::string kPing("\xc0\x00", 2);  // PINGREQ
        ok = write_all(fd, kPing);
        last_write = Clock::now();
      }
      // PUBACKs (and PINGRESP); an orderly close or an error means the connection is gone.
      if (ok && !read_acks(fd)) ok = false;
      if (stop_now) {
        // Drain what arrived meanwhile, within the time stop() allowed.
        std::unique_lock lock(mu_);
        wrap_relay();
        while (ok && !queued_.empty() && Clock::now() < drain_until_) {
          batch.swap(queued_);
          lock.unlock();
          ok = write_all(fd, batch);
          batch.clear();
          lock.lock();
        }
        static const std::string kDisconnect("\xe0\x00", 2);  // DISCONNECT
        if (ok) (void)write_all(fd, kDisconnect);
        connected_.store(false, std::memory_order_release);
        ::close(fd);
        return;
      }
    }
    ::close(fd);
    log_warn("batch publisher: the connection to the broker ended; reconnecting");
    connection_lost();
  }
}

}  // namespace doppel::mqtt
