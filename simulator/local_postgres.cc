#include "simulator/local_postgres.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "simulator/local_broker.h"

namespace doppel::sim {
namespace {

std::string bindir() {
  std::string out;
  if (FILE* p = ::popen("pg_config --bindir 2>/dev/null", "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out.empty() ? "/usr/lib/postgresql/15/bin" : out;
}

}  // namespace

LocalPostgres::LocalPostgres(std::string dir, LocalPostgresOptions options)
    : dir_(std::move(dir)), options_(std::move(options)), bin_(bindir()), port_(free_port()) {
  if (::geteuid() == 0) as_ = "runuser -u postgres -- ";
}

LocalPostgres::~LocalPostgres() { stop(); }

int LocalPostgres::run(const std::string& command) const { return std::system(command.c_str()); }

std::string LocalPostgres::tail(const std::string& file) const {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return s.size() > 2000 ? s.substr(s.size() - 2000) : s;
}

Status LocalPostgres::start() {
  if (running_) return Status::ok();
  if (!initialised_) {
    std::filesystem::create_directories(dir_);
    if (!as_.empty()) run("chown postgres:postgres '" + dir_ + "'");
    std::string auth = "--auth-local=trust --auth-host=trust";
    if (!options_.password.empty()) {
      std::ofstream(dir_ + "/pw") << options_.password << "\n";
      if (!as_.empty()) run("chown postgres:postgres '" + dir_ + "/pw'");
      auth = "--auth-local=trust --auth-host=scram-sha-256 --pwfile='" + dir_ + "/pw'";
    }
    // More initdb options for an investigation, e.g. DOPPEL_PG_INITDB_ARGS="--wal-segsize=256".
    const char* initdb_extra = std::getenv("DOPPEL_PG_INITDB_ARGS");
    if (run(as_ + bin_ + "/initdb -D '" + dir_ + "/data' -U doppel -E UTF8 --no-sync " + auth +
            (initdb_extra != nullptr ? std::string(" ") + initdb_extra : std::string()) + " > '" +
            dir_ + "/initdb.log' 2>&1") != 0) {
      return Status(StatusCode::kUnavailable,
                    "cannot initialise a PostgreSQL cluster (is postgresql-15 installed? "
                    "scripts/setup.sh installs it): " +
                        tail(dir_ + "/initdb.log"));
    }
    initialised_ = true;
  }
  std::string settings = "-p " + std::to_string(port_) + " -k '" + dir_ +
                         "' -c listen_addresses=127.0.0.1" +
                         (options_.fsync ? "" : " -c fsync=off") +
                         (options_.steady_wal ? " -c wal_init_zero=off" : "");
  // More server settings for an investigation, e.g. DOPPEL_PG_SETTINGS="-c log_checkpoints=on".
  if (const char* extra = std::getenv("DOPPEL_PG_SETTINGS")) settings += std::string(" ") + extra;
  if (run(as_ + bin_ + "/pg_ctl -D '" + dir_ + "/data' -l '" + dir_ +
          "/server.log' -w -t 60 -o \"" + settings + "\" start > /dev/null") != 0) {
    return Status(StatusCode::kUnavailable,
                  "cannot start PostgreSQL: " + tail(dir_ + "/server.log"));
  }
  running_ = true;
  return Status::ok();
}

void LocalPostgres::stop() {
  if (!running_) return;
  run(as_ + bin_ + "/pg_ctl -D '" + dir_ + "/data' -m fast -w stop > /dev/null");
  running_ = false;
}

std::string LocalPostgres::uri(const std::string& db, const std::string& user,
                               const std::string* password) const {
  const std::string pw = password != nullptr ? *password : options_.password;
  return "postgresql://" + user + (pw.empty() ? "" : ":" + pw) +
         "@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

Result<std::string> LocalPostgres::create_database() {
  const std::string name = "t" + std::to_string(++databases_);
  // Over the trusted socket in the directory.
  if (run(bin_ + "/createdb -h '" + dir_ + "' -p " + std::to_string(port_) + " -U doppel " + name +
          " > '" + dir_ + "/createdb.log' 2>&1") != 0) {
    return Status(StatusCode::kUnavailable,
                  "cannot create database " + name + ": " + tail(dir_ + "/createdb.log"));
  }
  return uri(name);
}

double LocalPostgres::cpu_seconds() const {
  // The postmaster, its backends and helpers (its children), and the children that exited.
  const int root = pid();
  if (root <= 0) return -1;
  auto fields = [](int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::vector<std::string> out;
    if (!std::getline(in, line)) return out;
    const auto close = line.rfind(')');
    std::istringstream rest(line.substr(close + 2));
    for (std::string f; rest >> f;) out.push_back(f);
    return out;  // out[0] is field 3 (state)
  };
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(name);
    const auto f = fields(pid);
    if (f.size() < 15) continue;
    const bool mine = pid == root || std::stoi(f[1]) == root;  // field 4: ppid
    if (!mine) continue;
    total += static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) / tick;  // 14, 15
    if (pid == root) {
      total += static_cast<double>(std::stoull(f[13]) + std::stoull(f[14])) / tick;  // 16, 17
    }
  }
  return total;
}

double LocalPostgres::wal_bytes() const {
  const std::string command = bin_ + "/psql -h '" + dir_ + "' -p " + std::to_string(port_) +
                              " -U doppel -d postgres -Atc 'SELECT wal_bytes FROM pg_stat_wal' "
                              "2>/dev/null";
  std::string out;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
    ::pclose(p);
  }
  try {
    return std::stod(out);
  } catch (const std::exception&) {
    return -1;
  }
}

int LocalPostgres::pid() const {
  std::ifstream in(dir_ + "/data/postmaster.pid");
  int pid = -1;
  in >> pid;
  return pid;
}

}  // namespace doppel::sim
