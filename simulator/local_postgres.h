// LocalPostgres: a private PostgreSQL server in a directory, for tests and doppel-bench (as
// LocalBroker is for Mosquitto): initdb, then pg_ctl on a free loopback port with its socket in
// that directory, stopped when the object goes. PostgreSQL refuses to run as root, so as root both
// run as the `postgres` system user (Debian's postgresql-15 creates it).
#pragma once

#include <string>

#include "twins/status.h"

namespace doppel::sim {

struct LocalPostgresOptions {
  // With a password, logins over TCP need it (scram-sha-256); the socket in the directory is
  // trusted (the owner's own administration).
  std::string password;
  // fsync off: for tests, where a machine crash is not what is tested. The bench keeps it on, so
  // that its figures include what a real server pays for a durable commit.
  bool fsync = true;
  // wal_init_zero off: a new cluster creates each 16 MB WAL segment by writing zeros to it and
  // syncing, which stalls the commits waiting behind it by tens of ms; a server in steady state
  // recycles its segments instead. The bench turns this on so that its figures are the steady
  // state's (docs/performance.md, 2026-12-05 fourth session), not a new cluster's first GB.
  bool steady_wal = false;
};

class LocalPostgres {
 public:
  LocalPostgres(std::string dir, LocalPostgresOptions options = {});
  ~LocalPostgres();
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;

  // Creates the cluster on first use, then starts the server and waits until it accepts
  // connections; the failure carries the end of its log.
  Status start();
  // A fast shutdown (what is committed stays), waiting for it.
  void stop();
  bool running() const { return running_; }
  int port() const { return port_; }
  // A libpq URI over TCP to database `db`, as `user` with `password` (none: the server's).
  std::string uri(const std::string& db, const std::string& user = "doppel",
                  const std::string* password = nullptr) const;
  // A new, empty database (t1, t2, ...); its URI.
  Result<std::string> create_database();
  // The server's process id, or -1.
  int pid() const;
  // CPU time (user + system) the server and its backends have used so far, in seconds.
  double cpu_seconds() const;
  // WAL written since the cluster was made, in bytes (pg_stat_wal), or -1.
  double wal_bytes() const;

 private:
  int run(const std::string& command) const;
  std::string tail(const std::string& file) const;

  std::string dir_;
  LocalPostgresOptions options_;
  std::string bin_;
  std::string as_;  // "runuser -u postgres -- " as root
  int port_ = 0;
  int databases_ = 0;
  bool initialised_ = false;
  bool running_ = false;
};

}  // namespace doppel::sim
