// Raw HTTP over a plain TCP socket, for the front-end tests: requests no HTTP library would send
// (dribbled headers, huge bodies, pipelines), idle connections, and slow readers.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "twins/document.h"

namespace doppel::testing {

// A raw TCP client: for requests no HTTP library would send.
class Raw {
 public:
  // `source`: the local address to connect from (127.0.0.N are all this machine).
  // `receive_buffer` > 0: SO_RCVBUF, set before connecting so that it bounds the window (a
  // slow reader that loopback cannot hide behind megabytes of buffers).
  explicit Raw(int port, const char* source = nullptr, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    if (source != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, source, &local.sin_addr);
      ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(Raw&& o) noexcept : fd_(o.fd_), connected_(o.connected_) { o.fd_ = -1; }
  bool connected() const { return connected_; }
  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Receives what is there within `timeout` (at most up to `bytes` more) into the buffer; returns
  // whether anything arrived. Notes when the peer closed.
  bool fill(std::chrono::milliseconds timeout, size_t bytes = 1 << 20) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    std::string chunk(std::min<size_t>(bytes, 65536), '\0');
    const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    buf_.append(chunk.data(), static_cast<size_t>(n));
    return true;
  }
  // Whether the server has said something (or closed) already, without waiting.
  bool readable() {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  // The next whole response (headers and a Content-Length body), or what arrived before the
  // peer closed or `timeout` passed.
  std::string response(std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const size_t end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t cl = buf_.find("Content-Length: ");
        const size_t len =
            cl == std::string::npos || cl > end ? 0 : std::stoul(buf_.substr(cl + 16));
        if (buf_.size() >= end + 4 + len) {
          std::string r = buf_.substr(0, end + 4 + len);
          buf_.erase(0, end + 4 + len);
          return r;
        }
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (closed_ || left.count() <= 0) return std::exchange(buf_, {});
      fill(left);
    }
  }
  bool closed() const { return closed_; }
  // What has arrived and not been taken by response().
  const std::string& buffered() const { return buf_; }
  void clear() { buf_.clear(); }
  void set_send_buffer(int bytes) {
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buf_;
};

inline int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(response.substr(9, 3)) : 0;
}

inline twins::json body_of(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? twins::json()
                                  : twins::json::parse(response.substr(end + 4), nullptr, false);
}

inline void raise_fd_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

}  // namespace doppel::testing
