// DeviceAuth on a real SQLite file: the broker's password file follows the credential store, the
// broker is asked to reload after each change, and concurrent changes share one rewrite.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "gateway/device_auth.h"
#include "storage/sqlite/credential_store.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/metrics.h"

using namespace doppel;
using gateway::DeviceAuth;
using gateway::DeviceAuthOptions;

namespace {

struct Fixture {
  std::filesystem::path dir;
  Metrics metrics;
  std::unique_ptr<storage::SqliteTwinStore> twins;  // creates and migrates the schema
  std::unique_ptr<storage::CredentialStore> credentials;
  std::unique_ptr<DeviceAuth> auth;

  Fixture() {
    std::mt19937_64 rng{std::random_device{}()};
    dir = std::filesystem::temp_directory_path() / ("doppel-auth-" + std::to_string(rng()));
    std::filesystem::create_directories(dir);
    const std::string db = (dir / "doppel.db").string();
    storage::StoreOptions options;
    options.path = db;
    auto t = storage::SqliteTwinStore::open(options, metrics);
    REQUIRE(t);
    twins = std::move(*t);
    auto c = storage::CredentialStore::open(db);
    REQUIRE(c);
    credentials = std::move(*c);
    auth =
        std::make_unique<DeviceAuth>(DeviceAuthOptions{(dir / "mosquitto").string()}, *credentials);
    REQUIRE(auth->start());
  }
  ~Fixture() {
    auth.reset();
    credentials.reset();
    twins.reset();
    std::filesystem::remove_all(dir);
  }
  std::string password_file() const {
    std::ifstream in(auth->password_file());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

// Spins (yielding) until `cond` holds; false after 10 s.
bool until(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

TEST_CASE("issued credentials reach the password file hashed; revoked ones leave it") {
  Fixture f;
  int reloads = 0;
  f.auth->on_change([&] { ++reloads; });
  auto password = f.auth->issue("pump-1");
  REQUIRE(password);
  const std::string file = f.password_file();
  CHECK(file.find("pump-1:$7$101$") != std::string::npos);
  CHECK(file.find(*password) == std::string::npos);  // only the hash is ever written
  CHECK(file.find("doppel-gateway:$7$101$") != std::string::npos);
  CHECK(reloads == 1);

  auto revoked = f.auth->revoke("pump-1");
  REQUIRE(revoked);
  CHECK(revoked->password);
  CHECK(revoked->certificates == 0);
  CHECK(f.password_file().find("pump-1:") == std::string::npos);
  CHECK(reloads == 2);
  revoked = f.auth->revoke("pump-1");  // nothing left to revoke: no rewrite, no reload
  REQUIRE(revoked);
  CHECK_FALSE(revoked->password);
  CHECK(reloads == 2);

  CHECK_FALSE(f.auth->issue("doppel-gateway"));  // the gateway's own account is not a device
  CHECK(reloads == 2);
}

TEST_CASE("changes that arrive during a rewrite share the next one") {
  Fixture f;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  int reloads = 0;
  // The first rewrite is held in its reload until eight more changes are waiting.
  f.auth->on_change([&] {
    std::unique_lock lock(mu);
    if (++reloads == 1) cv.wait(lock, [&] { return release; });
  });
  auto first = std::async(std::launch::async, [&] { return f.auth->issue("dev-0"); });
  REQUIRE(until([&] {
    std::lock_guard lock(mu);
    return reloads == 1;
  }));
  std::vector<std::future<Result<std::string>>> more;
  for (int i = 1; i <= 8; ++i) {
    more.push_back(std::async(std::launch::async,
                              [&, i] { return f.auth->issue("dev-" + std::to_string(i)); }));
  }
  REQUIRE(until([&] { return f.auth->waiting_changes() == 9; }));
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();

  REQUIRE(first.get());
  for (auto& m : more) REQUIRE(m.get());
  CHECK(f.auth->rewrites() == 2);  // dev-0's, then one for the eight that waited
  CHECK(reloads == 2);
  CHECK(f.auth->waiting_changes() == 0);
  const std::string file = f.password_file();
  for (int i = 0; i <= 8; ++i) {
    CHECK_MESSAGE(file.find("dev-" + std::to_string(i) + ":$7$") != std::string::npos, i);
  }
}
