#include "simulator/local_broker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

namespace doppel::sim {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

bool port_open(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string user_name() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr ? pw->pw_name : "root";
}

namespace {

std::string mosquitto_binary() {
  for (const char* p : {"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "mosquitto";
}

}  // namespace

LocalBroker::LocalBroker(const std::string& dir, std::vector<std::string> extra_config)
    : conf_(dir + "/mosquitto-" + std::to_string(::getpid()) + ".conf"),
      log_(dir + "/mosquitto.log"),
      port_(free_port()) {
  std::ofstream conf(conf_);
  conf << "listener " << port_ << " 127.0.0.1\n"
       << "allow_anonymous true\n"
       << "user " << user_name() << "\n"
       << "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
       << "set_tcp_nodelay true\nlog_dest stderr\n";
  for (const auto& line : extra_config) conf << line << "\n";
}

Status LocalBroker::start() {
  process_ = Process({mosquitto_binary(), "-c", conf_}, log_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (port_open(port_)) return Status::ok();
    if (!process_.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status(StatusCode::kUnavailable, "mosquitto did not start: " + process_.log());
}

void LocalBroker::kill9() {
  process_.signal(SIGKILL);
  process_.wait_exit(std::chrono::seconds(5));
}

}  // namespace doppel::sim
