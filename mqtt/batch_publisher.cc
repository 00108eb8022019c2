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

BatchPublisher::BatchPublisher(BatchPublisherOptions options) : options_(std::move(options)) {}

BatchPublisher::~BatchPublisher() { stop(std::chrono::milliseconds(0)); }

void BatchPublisher::start() {
  thread_ = std::thread([this] {
    name_this_thread("mqtt-qos0");
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

bool BatchPublisher::publish(std::string_view topic, std::string_view payload) {
  if (!connected() || topic.empty() || topic.size() > kMaxTopicBytes ||
      2 + topic.size() + payload.size() > kMaxRemaining) {
    return false;
  }
  bool wake;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queued_.size() + payload.size() > options_.max_queued_bytes) return false;
    wake = queued_.empty();
    mqtt311::append_publish(queued_, topic, payload);
  }
  // One wake-up per batch: while the writer is busy, publishes only append.
  if (wake) cv_.notify_one();
  return true;
}

int BatchPublisher::open_connection() {
  const auto fail = [this](int fd, const std::string& why) {
    if (fd >= 0) ::close(fd);
    if (why != last_error_) {
      log_warn("QoS 0 publisher: cannot connect to " + options_.host + ":" +
               std::to_string(options_.port) + ": " + why + " (retrying; answers go through " +
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
  if (!last_error_.empty()) log_info("QoS 0 publisher: connected again");
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
        cv_.wait_until(lock, until, [this] { return stopping_ || !queued_.empty(); });
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
      // The broker sends nothing but PINGRESP (2 bytes) to a client that never subscribes:
      // discard it; an orderly close or an error means the connection is gone.
      char sink[256];
      const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        ok = false;
      }
      if (stop_now) {
        // Drain what arrived meanwhile, within the time stop() allowed.
        std::unique_lock lock(mu_);
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
    connected_.store(false, std::memory_order_release);
    ::close(fd);
    {
      std::lock_guard lock(mu_);
      queued_.clear();  // QoS 0: what was queued for a dead connection is gone
    }
    log_warn("QoS 0 publisher: the connection to the broker ended; reconnecting");
  }
}

}  // namespace doppel::mqtt
