#include "gateway/embedded_broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::gateway {
namespace {

namespace fs = std::filesystem;

// A port the kernel just handed out on 127.0.0.1 (free at this moment).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

bool can_connect(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string tail_of(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_bytes) s = s.substr(s.size() - max_bytes);
  return s;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string current_user() {
  if (const passwd* pw = ::getpwuid(::geteuid())) return pw->pw_name;
  return "root";
}

}  // namespace

std::string find_executable(const std::string& explicit_path, const std::string& name,
                            const std::string& fallback) {
  if (!explicit_path.empty()) return explicit_path;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      const fs::path candidate = fs::path(dir) / name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    }
  }
  return fallback;
}

EmbeddedBroker::EmbeddedBroker(BrokerOptions options) : options_(std::move(options)) {
  mosquitto_ = find_executable(options_.mosquitto_path, "mosquitto", "/usr/sbin/mosquitto");
}

EmbeddedBroker::~EmbeddedBroker() { stop(); }

std::string EmbeddedBroker::uri() const {
  const bool tls = !options_.tls_cert_file.empty();
  return (tls ? "ssl://" : "tcp://") + options_.bind + ":" + std::to_string(options_.port);
}

std::string EmbeddedBroker::gateway_uri() const {
  if (gateway_port_ == 0) return uri();
  return "tcp://127.0.0.1:" + std::to_string(gateway_port_);
}

void EmbeddedBroker::reload() {
  if (const pid_t pid = pid_.load(); pid > 0) ::kill(pid, SIGHUP);
}

std::string EmbeddedBroker::config_path() const {
  return (fs::path(options_.data_dir) / "mosquitto" / "mosquitto.conf").string();
}

std::string EmbeddedBroker::log_path() const {
  return (fs::path(options_.data_dir) / "mosquitto" / "mosquitto.log").string();
}

Status EmbeddedBroker::start() {
  if (::access(mosquitto_.c_str(), X_OK) != 0) {
    return Status(StatusCode::kUnavailable,
                  "mosquitto not found at '" + mosquitto_ +
                      "': install it (apt-get install mosquitto) or pass --broker to use an "
                      "external broker");
  }
  if (can_connect(options_.bind, options_.port)) {
    return Status(StatusCode::kUnavailable,
                  "port " + std::to_string(options_.port) + " on " + options_.bind +
                      " is already in use; pick another with --broker-port, or pass --broker " +
                      uri() + " to use the broker that is listening there");
  }
  const fs::path dir = fs::path(options_.data_dir) / "mosquitto";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return Status(StatusCode::kUnavailable, "cannot create " + dir.string() + ": " + ec.message());
  const bool x509 = !options_.device_ca_file.empty();
  if (x509 && gateway_port_ == 0) gateway_port_ = free_loopback_port();
  std::ofstream conf(config_path(), std::ios::trunc);
  conf << "# Written by doppeld at every start; edits here are overwritten.\n";
  if (!options_.password_file.empty()) {
    conf << "allow_anonymous false\n"
         << "password_file " << options_.password_file << "\n"
         << "acl_file " << options_.acl_file << "\n";
  } else {
    conf << "allow_anonymous true\n";
  }
  if (!options_.plugin_file.empty()) {
    conf << "# Reports disconnections to doppeld, disconnects revoked devices on its request, and\n"
         << "# publishes what doppeld relays (many QoS 0 messages in one packet).\n"
         << "plugin " << options_.plugin_file << "\n";
    if (!options_.gateway_user.empty()) {
      conf << "plugin_opt_gateway_user " << options_.gateway_user << "\n";
    }
    if (!options_.relay_user.empty()) {
      conf << "plugin_opt_relay_user " << options_.relay_user << "\n";
    }
  }
  conf << "listener " << options_.port << " " << options_.bind << "\n";
  if (!options_.tls_cert_file.empty()) {
    conf << "certfile " << options_.tls_cert_file << "\n"
         << "keyfile " << options_.tls_key_file << "\n";
  }
  if (x509) {
    conf << "# Devices authenticate with a certificate from the device CA; its CN is their\n"
         << "# username. The CRL is re-read on reload (SIGHUP), as are the ACL and passwords.\n"
         << "cafile " << options_.device_ca_file << "\n"
         << "require_certificate true\n"
         << "use_identity_as_username true\n"
         << "crlfile " << options_.crl_file << "\n";
  }
  if (!options_.password_file.empty()) {
    conf << "# A client's id is its username, whatever it asks for: no device can take over the\n"
         << "# gateway's or another device's session.\n"
         << "use_username_as_clientid true\n";
  }
  if (x509) {
    conf << "# doppeld's own connection: loopback only, with its password.\n"
         << "listener " << gateway_port_ << " 127.0.0.1\n"
         << "use_username_as_clientid true\n";
  }
  conf << "user " << current_user() << "\n"
       << "persistence true\n"
       << "persistence_location " << dir.string() << "/\n"
       << "autosave_interval 30\n"
       << "# The gateway's persistent session must not lose device messages while it restarts.\n"
       << "max_queued_messages 1000000\n"
       << "max_inflight_messages 1000\n"
       << "max_packet_size 1048576\n"
       << "set_tcp_nodelay true\n"
       << "# $SYS/broker/publish/messages/dropped tells doppeld when its queue overflows.\n"
       << "sys_interval " << kSysIntervalS << "\n"
       << "log_dest stderr\n"
       // Its notices on $SYS/broker/log/N too: doppeld learns each device's connection there.
       << "log_dest topic\n"
       << "log_type error\nlog_type warning\nlog_type notice\n";
  conf.close();
  if (!conf) return Status(StatusCode::kUnavailable, "cannot write " + config_path());
  stopping_.store(false);
  if (Status s = spawn(); !s) return s;
  if (Status s = wait_until_listening(); !s) {
    stop();
    return s;
  }
  set_state("running");
  supervisor_ = std::thread([this] {
    name_this_thread("broker-watch");
    supervise();
  });
  log_info("embedded broker: mosquitto pid " + std::to_string(pid_.load()) + " on " + uri() +
           " (config " + config_path() + ", log " + log_path() + ")");
  return Status::ok();
}

Status EmbeddedBroker::spawn() {
  const std::string conf = config_path();
  const std::string log_file = log_path();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return Status(StatusCode::kUnavailable, "fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execl(mosquitto_.c_str(), mosquitto_.c_str(), "-c", conf.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_.store(pid);
  return Status::ok();
}

Status EmbeddedBroker::wait_until_listening() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (can_connect(options_.bind, options_.port)) return Status::ok();
    int status = 0;
    if (::waitpid(pid_.load(), &status, WNOHANG) == pid_.load()) {
      pid_.store(-1);
      {
        std::lock_guard lock(mu_);
        exited_.notify_all();
      }
      return Status(StatusCode::kUnavailable, "mosquitto exited at start-up; its log (" +
                                                  log_path() + ") ends with:\n" +
                                                  tail_of(log_path(), 600));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status(StatusCode::kUnavailable, "mosquitto did not listen on " + uri() + " within 10 s");
}

void EmbeddedBroker::set_state(std::string state) {
  std::lock_guard lock(state_mu_);
  state_ = std::move(state);
}

std::string EmbeddedBroker::state() const {
  std::lock_guard lock(state_mu_);
  return state_;
}

bool EmbeddedBroker::wait_or_stop(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return !exited_.wait_for(lock, delay, [this] { return stopping_.load(); });
}

void EmbeddedBroker::supervise() {
  // For as long as doppeld runs: wait for mosquitto to exit, then restart it with backoff
  // (0.5 s doubling to kMaxBackoff), however many attempts fail.
  while (!stopping_.load()) {
    const pid_t pid = pid_.load();
    if (pid > 0) {
      int status = 0;
      if (::waitpid(pid, &status, 0) != pid) break;
      pid_.store(-1);
      {
        std::lock_guard lock(mu_);
        exited_.notify_all();
      }
      if (stopping_.load()) break;
      log_error("embedded broker exited unexpectedly (" + describe_exit(status) +
                "); restarting it");
    }
    auto backoff = std::chrono::milliseconds(500);
    for (int attempt = 1; !stopping_.load(); ++attempt) {
      set_state("restarting: attempt " + std::to_string(attempt) + " in " +
                std::to_string(backoff.count()) + " ms");
      if (!wait_or_stop(backoff)) break;
      Status s = spawn();
      if (s) s = wait_until_listening();
      if (s) {
        log_info("embedded broker restarted: pid " + std::to_string(pid_.load()) + " (attempt " +
                 std::to_string(attempt) + ")");
        restarts_.fetch_add(1);
        set_state("running");
        break;
      }
      if (const pid_t stuck = pid_.exchange(-1); stuck > 0) {  // started but never listened
        ::kill(stuck, SIGKILL);
        ::waitpid(stuck, nullptr, 0);
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
      log_error("restarting the embedded broker failed (attempt " + std::to_string(attempt) +
                "): " + s.message() + "; retrying in " + std::to_string(backoff.count()) + " ms");
    }
  }
}

void EmbeddedBroker::stop() {
  stopping_.store(true);
  const pid_t pid = pid_.load();
  if (pid > 0) {
    ::kill(pid, SIGTERM);
    std::unique_lock lock(mu_);
    if (!exited_.wait_for(lock, std::chrono::seconds(5), [this] { return pid_.load() <= 0; })) {
      ::kill(pid, SIGKILL);
    }
  }
  {
    std::lock_guard lock(mu_);
    exited_.notify_all();
  }
  if (supervisor_.joinable()) supervisor_.join();
  if (pid_.load() > 0) {  // never supervised (start failed part-way)
    ::kill(pid_.load(), SIGKILL);
    ::waitpid(pid_.load(), nullptr, 0);
    pid_.store(-1);
  }
}

}  // namespace doppel::gateway
