#include "simulator/bench/raw_publisher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mqtt/mqtt311.h"

namespace doppel::bench {
namespace {

using mqtt::mqtt311::read_exact;
using mqtt::mqtt311::write_all;

constexpr size_t kFlushBytes = 64 * 1024;

}  // namespace

RawPublisher::~RawPublisher() { close(); }

Status RawPublisher::connect(int port, const std::string& client_id) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status(StatusCode::kUnavailable, "cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // CONNECT: MQTT 3.1.1, clean session, no keep-alive (the load is continuous and short).
  const std::string packet = mqtt::mqtt311::connect_packet(client_id, "", "", 0);
  if (!write_all(fd_, packet.data(), packet.size())) {
    return Status(StatusCode::kUnavailable, "CONNECT failed");
  }
  char connack[4];
  if (!read_exact(fd_, connack, 4) || static_cast<uint8_t>(connack[0]) != 0x20 || connack[3] != 0) {
    return Status(StatusCode::kUnavailable, "the broker refused the connection");
  }
  reader_ = std::thread([this] { read_loop(); });
  return Status::ok();
}

void RawPublisher::read_loop() {
  char header[2];
  while (read_exact(fd_, header, 2)) {
    // Remaining lengths here are small (PUBACK = 2); read any longer packet fully and skip it.
    size_t remaining = static_cast<uint8_t>(header[1]) & 0x7f;
    size_t multiplier = 128;
    char byte = header[1];
    while ((static_cast<uint8_t>(byte) & 0x80) != 0) {
      if (!read_exact(fd_, &byte, 1)) return;
      remaining += (static_cast<uint8_t>(byte) & 0x7f) * multiplier;
      multiplier *= 128;
    }
    std::string rest(remaining, '\0');
    if (remaining > 0 && !read_exact(fd_, rest.data(), remaining)) return;
    if ((static_cast<uint8_t>(header[0]) & 0xf0) == 0x40) {
      acked_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(mu_);
      acked_cv_.notify_all();
    }
  }
  closed_.store(true);
  std::lock_guard lock(mu_);
  acked_cv_.notify_all();
}

Status RawPublisher::publish(const std::string& topic, const std::string& payload, int qos,
                             uint64_t window) {
  if (qos > 0) {
    if (qos1_sent_.load() - acked_.load() >= window) {
      if (Status s = flush(); !s) return s;
      std::unique_lock lock(mu_);
      acked_cv_.wait(lock,
                     [&] { return qos1_sent_.load() - acked_.load() < window || closed_.load(); });
    }
    if (closed_.load()) return Status(StatusCode::kUnavailable, "connection closed");
  }
  mqtt::mqtt311::append_publish(buffer_, topic, payload, qos, static_cast<uint16_t>(next_id_));
  if (qos > 0) {
    next_id_ = next_id_ == 65535 ? 1 : next_id_ + 1;
    qos1_sent_.fetch_add(1, std::memory_order_relaxed);
  }
  sent_.fetch_add(1, std::memory_order_relaxed);
  if (buffer_.size() >= kFlushBytes) return flush();
  return Status::ok();
}

Status RawPublisher::flush() {
  if (buffer_.empty()) return Status::ok();
  const bool ok = write_all(fd_, buffer_.data(), buffer_.size());
  buffer_.clear();
  return ok ? Status::ok() : Status(StatusCode::kUnavailable, "send failed");
}

bool RawPublisher::drain(std::chrono::milliseconds timeout) {
  if (!flush()) return false;
  std::unique_lock lock(mu_);
  return acked_cv_.wait_for(lock, timeout,
                            [&] { return acked_.load() >= qos1_sent_.load() || closed_.load(); });
}

void RawPublisher::close() {
  if (fd_ < 0) return;
  (void)flush();
  const char disconnect[2] = {static_cast<char>(0xe0), 0};
  write_all(fd_, disconnect, 2);
  ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
  fd_ = -1;
}

}  // namespace doppel::bench
