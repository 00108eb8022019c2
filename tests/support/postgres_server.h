// PostgresServer: a private PostgreSQL server for a test, in a temporary directory: initdb, then
// pg_ctl on a random loopback port with its socket in that directory; stopped and removed when the
// object goes. PostgreSQL refuses to run as root, so as root both run as the `postgres` system
// user. A test that needs it and cannot start it fails, saying why (it never skips).
// Test-only; needs Debian's postgresql-15 (scripts/setup.sh installs it).
#pragma once

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "storage/postgres/detail/pg.h"
#include "tests/support/temp_dir.h"

namespace doppel::testing {

class PostgresServer {
 public:
  // With a `password`, logins over TCP need it (scram-sha-256); the socket in the directory is
  // trusted (the tests' own administration).
  explicit PostgresServer(std::string password = {}) : password_(std::move(password)) {
    bin_ = bindir();
    port_ = free_port();
    const std::string d = dir_.path().string();
    if (::geteuid() == 0) as_ = "runuser -u postgres -- ";
    if (!as_.empty()) run("chown postgres:postgres '" + d + "'");
    std::string auth = "--auth-local=trust --auth-host=trust";
    if (!password_.empty()) {
      std::ofstream(d + "/pw") << password_ << "\n";
      if (!as_.empty()) run("chown postgres:postgres '" + d + "/pw'");
      auth = "--auth-local=trust --auth-host=scram-sha-256 --pwfile='" + d + "/pw'";
    }
    REQUIRE_MESSAGE(run(as_ + bin_ + "/initdb -D '" + d + "/data' -U doppel -E UTF8 --no-sync " +
                        auth + " > '" + d + "/initdb.log' 2>&1") == 0,
                    "cannot initialise a PostgreSQL cluster: " << tail(d + "/initdb.log"));
    start();
  }
  ~PostgresServer() { stop(); }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  void start() {
    const std::string d = dir_.path().string();
    REQUIRE_MESSAGE(run(as_ + bin_ + "/pg_ctl -D '" + d + "/data' -l '" + d +
                        "/server.log' -w -t 60 -o \"-p " + std::to_string(port_) + " -k '" + d +
                        "' -c listen_addresses=127.0.0.1 -c fsync=off\" start > /dev/null") == 0,
                    "cannot start PostgreSQL: " << tail(d + "/server.log"));
    running_ = true;
  }
  void stop() {
    if (!running_) return;
    run(as_ + bin_ + "/pg_ctl -D '" + dir_.path().string() + "/data' -m fast -w stop > /dev/null");
    running_ = false;
  }

  int port() const { return port_; }
  // A libpq URI over TCP to database `db`, as `user` with `password` (none: the server's).
  std::string uri(const std::string& db, const std::string& user = "doppel",
                  std::optional<std::string> password = std::nullopt) const {
    const std::string pw = password.value_or(password_);
    return "postgresql://" + user + (pw.empty() ? "" : ":" + pw) +
           "@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }
  // A new, empty database; its URI.
  std::string create_database() {
    const std::string name = "t" + std::to_string(++databases_);
    auto admin =
        storage::pg::Connection::open("postgresql://doppel@/postgres?host=" + dir_.path().string() +
                                      "&port=" + std::to_string(port_));
    REQUIRE_MESSAGE(admin, admin.status().to_string());
    auto made = admin->exec("CREATE DATABASE " + name);
    REQUIRE_MESSAGE(made, made.status().to_string());
    return uri(name);
  }

 private:
  static int run(const std::string& command) { return std::system(command.c_str()); }
  static std::string bindir() {
    std::string out;
    if (FILE* p = ::popen("pg_config --bindir 2>/dev/null", "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
      ::pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out.empty() ? "/usr/lib/postgresql/15/bin" : out;
  }
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port = ntohs(a.sin_port);
    }
    if (fd >= 0) ::close(fd);
    return port;
  }
  static std::string tail(const std::string& file) {
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string s = ss.str();
    return s.size() > 2000 ? s.substr(s.size() - 2000) : s;
  }

  TempDir dir_{"doppel-pg-"};
  std::string password_;
  std::string bin_;
  std::string as_;
  int port_ = 0;
  int databases_ = 0;
  bool running_ = false;
};

// The run's private server, started on first use and stopped at exit.
inline PostgresServer& shared_postgres() {
  static PostgresServer server;
  return server;
}

}  // namespace doppel::testing
