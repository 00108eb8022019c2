// The conventional design the actor model replaces, measured under the same load: a stateless
// handler that, for every reported message, reads the twin's row from SQLite, merges the patch
// and writes the row back, each message in its own transaction. Done as a competent engineer
// would: WAL, synchronous=NORMAL (doppeld's default), prepared statements, one connection on one
// thread (SQLite admits one writer at a time, so more threads would only contend).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "twins/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace doppel::mqtt {
class Client;
}

namespace doppel::bench {

class BaselineGateway {
 public:
  BaselineGateway(std::string broker, std::string db_path);
  ~BaselineGateway();
  Status start();
  void stop();
  uint64_t processed() const { return processed_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  void handle(const std::string& topic, const std::string& payload);

  std::string broker_;
  std::string db_path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* select_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  std::unique_ptr<mqtt::Client> client_;
  std::atomic<uint64_t> processed_{0};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace doppel::bench
