#include "tests/support/harness.h"

#include <cstdlib>
#include <map>
#include <mutex>

#include "tests/support/postgres_server.h"

#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <thread>

#include "mqtt/codec.h"

namespace doppel::testing {

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
}

Broker::Broker(const TempDir& dir, std::vector<std::string> extra_config)
    : sim::LocalBroker(dir.path().string(), std::move(extra_config)) {
  start();
}

void Broker::start() {
  auto s = sim::LocalBroker::start();
  REQUIRE_MESSAGE(s, s.to_string());
}

namespace {

std::string dynsec_plugin() {
  for (const char* p :
       {"/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so"}) {
    if (::access(p, R_OK) == 0) return p;
  }
  return "";
}

std::string mosquitto_ctrl() {
  for (const char* p : {"/usr/bin/mosquitto_ctrl", "/usr/local/bin/mosquitto_ctrl"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "mosquitto_ctrl";
}

}  // namespace

DynsecSetup::DynsecSetup(const TempDir& dir) : file(dir.file("dynamic-security.json")) {
  REQUIRE_MESSAGE(!dynsec_plugin().empty(),
                  "Mosquitto's dynamic-security plugin is not installed (package mosquitto)");
  sim::Process init({mosquitto_ctrl(), "dynsec", "init", file, username, password},
                    dir.file("dynsec-init.log"));
  int status = -1;
  REQUIRE(init.wait_exit(10s, &status));
  const bool initialised = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  REQUIRE_MESSAGE(initialised, init.log());
}

std::vector<std::string> DynsecSetup::broker_config(bool allow_anonymous) const {
  return {"plugin " + dynsec_plugin(), "plugin_opt_config_file " + file,
          allow_anonymous ? "allow_anonymous true" : "allow_anonymous false"};
}

void DynsecSetup::control(int port, const std::vector<std::string>& command) const {
  std::vector<std::string> argv = {
      mosquitto_ctrl(), "-h", "127.0.0.1", "-p",    std::to_string(port), "-u",
      username,         "-P", password,    "dynsec"};
  argv.insert(argv.end(), command.begin(), command.end());
  sim::Process ctrl(argv, file + ".ctrl.log");
  int status = -1;
  REQUIRE(ctrl.wait_exit(10s, &status));
  const bool done = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  REQUIRE_MESSAGE(done, ctrl.log());
}

std::vector<std::string> DynsecSetup::gateway_args() const {
  return {"--device-auth", "--broker-username", username, "--broker-password", password};
}

Doppeld::Doppeld(std::string data_dir, std::string broker_uri, std::vector<std::string> extra_args)
    : data_dir_(std::move(data_dir)),
      broker_uri_(std::move(broker_uri)),
      extra_(std::move(extra_args)),
      http_port_(free_port()) {}

Doppeld::~Doppeld() {
  if (process_.running()) stop();
}

void Doppeld::start_unready(std::chrono::milliseconds within) {
  launch();
  const bool up = eventually([&] { return !process_.running() || get("/healthz").status == 200; },
                             within, 20ms);
  REQUIRE_MESSAGE((up && process_.running()), "doppeld did not start:\n", log());
}

void Doppeld::start_expecting_exit(std::chrono::milliseconds within) {
  launch();
  REQUIRE_MESSAGE(process_.wait_exit(within), "doppeld kept running:\n", log());
}

void Doppeld::start(std::chrono::milliseconds ready_within) {
  launch();
  const bool ready = eventually(
      [&] {
        if (!process_.running()) return true;
        return get("/readyz").status == 200;
      },
      ready_within, 20ms);
  REQUIRE_MESSAGE((ready && process_.running()), "doppeld did not become ready:\n", log());
}

void Doppeld::start_with(const std::function<bool()>& up, std::chrono::milliseconds within) {
  launch();
  const bool ok = eventually([&] { return !process_.running() || up(); }, within, 20ms);
  REQUIRE_MESSAGE((ok && process_.running()), "doppeld did not come up:\n", log());
}

namespace {

// With DOPPEL_TEST_STORE=postgres the integration tests run doppeld on PostgreSQL: one private
// server per test process, one database per data directory (so that a restart finds its twins).
std::string postgres_store_for(const std::string& data_dir) {
  static std::mutex mu;
  static std::map<std::string, std::string> databases;
  std::lock_guard lock(mu);
  auto it = databases.find(data_dir);
  if (it != databases.end()) return it->second;
  return databases[data_dir] = shared_postgres().create_database();
}

}  // namespace

bool store_is_postgres() {
  const char* store = std::getenv("DOPPEL_TEST_STORE");
  return store != nullptr && std::string(store) == "postgres";
}

void Doppeld::launch() {
  std::vector<std::string> args = {
      DOPPELD_PATH,  "--data", data_dir_, "--http", "127.0.0.1:" + std::to_string(http_port_),
      "--log-level", "debug"};
  if (!broker_uri_.empty()) {
    args.push_back("--broker");
    args.push_back(broker_uri_);
  }
  if (store_is_postgres()) {
    args.push_back("--store");
    args.push_back(postgres_store_for(data_dir_));
  }
  for (std::string arg : extra_) {  // "{http_port}": this doppeld's (e.g. in --advertise)
    for (size_t at = arg.find("{http_port}"); at != std::string::npos;
         at = arg.find("{http_port}")) {
      arg.replace(at, 11, std::to_string(http_port_));
    }
    args.push_back(std::move(arg));
  }
  std::filesystem::create_directories(data_dir_);  // the log file goes there
  process_ = Process(args, data_dir_ + "/doppeld-" + std::to_string(++starts_) + ".log");
}

void Doppeld::kill9() {
  process_.signal(SIGKILL);
  process_.wait_exit(10s);
}

int Doppeld::stop() {
  int status = -1;
  process_.signal(SIGTERM);
  if (!process_.wait_exit(20s, &status)) {
    process_.signal(SIGKILL);
    process_.wait_exit(5s);
  }
  return status;
}

HttpResult Doppeld::request(const std::string& method, const std::string& path,
                            const std::string& body,
                            const std::vector<std::pair<std::string, std::string>>& headers) {
  httplib::Client client("127.0.0.1", http_port_);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(30, 0);
  httplib::Headers h;
  std::string content_type = "application/json";
  for (const auto& [k, v] : headers) {
    if (k == "Content-Type") {
      content_type = v;
    } else {
      h.emplace(k, v);
    }
  }
  auto send = [&]() {
    if (method == "DELETE") return client.Delete(path, h);
    if (method == "PUT") return client.Put(path, h, body, content_type);
    if (method == "PATCH") return client.Patch(path, h, body, content_type);
    if (method == "POST") return client.Post(path, h, body, content_type);
    return client.Get(path, h);
  };
  httplib::Result res = send();
  HttpResult r;
  if (!res) return r;
  r.status = res->status;
  r.content_type = res->get_header_value("Content-Type");
  r.etag = res->get_header_value("ETag");
  r.request_id = res->get_header_value("X-Request-Id");
  if (!res->body.empty()) r.body = json::parse(res->body, nullptr, false);
  return r;
}

std::string Doppeld::text(const std::string& path) {
  httplib::Client client("127.0.0.1", http_port_);
  auto res = client.Get(path);
  return res ? res->body : std::string();
}

HttpResult Doppeld::patch_desired(const std::string& id, const json& patch,
                                  std::optional<uint64_t> if_match) {
  std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Type", "application/merge-patch+json"}};
  if (if_match) headers.emplace_back("If-Match", "\"" + std::to_string(*if_match) + "\"");
  return request("PATCH", "/v1/twins/" + id + "/desired", patch.dump(), headers);
}

std::vector<json> Doppeld::list_all() {
  std::vector<json> all;
  std::string cursor;
  while (true) {
    auto r = get("/v1/twins?limit=500" + (cursor.empty() ? "" : "&cursor=" + cursor));
    if (r.status != 200) return {};
    for (auto& item : r.body["items"]) all.push_back(item);
    if (r.body["next_cursor"].is_null()) break;
    cursor = r.body["next_cursor"].get<std::string>();
  }
  return all;
}

Stack::Stack(std::vector<std::string> gateway_args)
    : broker(dir), gateway(dir.file("data"), broker.uri(), std::move(gateway_args)) {
  gateway.start();
}

std::string sim_id(int i) {
  char id[32];
  std::snprintf(id, sizeof id, "sim-%06d", i);
  return id;
}

Process start_sim(const std::string& broker_uri, const std::string& log_file,
                  std::vector<std::string> args) {
  std::vector<std::string> argv = {DOPPEL_SIM_PATH, "--broker", broker_uri};
  argv.insert(argv.end(), args.begin(), args.end());
  return Process(argv, log_file);
}

TestDevice::TestDevice(std::string id, const std::string& broker_uri, twins::Encoding encoding,
                       std::string prefix, Login login)
    : id_(std::move(id)), prefix_(std::move(prefix)), encoding_(encoding) {
  mqtt::ClientOptions o;
  o.uri = broker_uri;
  // With credentials the client id is the device id (as a real device's); otherwise a test one.
  o.client_id = login.username.empty() ? "test-" + id_ : id_;
  o.username = login.username;
  o.password = login.password;
  if (!login.ca_file.empty()) o.tls = mqtt::TlsOptions{login.ca_file, "", ""};
  o.clean_start = true;
  client_ = std::make_unique<mqtt::Client>(o);
  client_->on_message([this](mqtt::IncomingMessage&& m) {
    const std::string commands = prefix_ + "/" + id_ + "/commands/";
    std::optional<twins::ResultStatus> answer;
    std::string command_id;
    if (m.topic.rfind(commands, 0) == 0 &&
        m.topic.find('/', commands.size()) == std::string::npos) {
      command_id = m.topic.substr(commands.size());
      std::lock_guard lock(mu_);
      ++deliveries_[command_id];
      answer = answer_;
    }
    if (answer) {
      const mqtt::WireCodec codec;
      twins::CommandResultMessage r{*answer, json{{"by", id_}}, ""};
      (void)client_->publish(
          m.topic + "/result", codec.encode_device(r, encoding_), 1,
          encoding_ == twins::Encoding::kProtobuf ? "application/x-protobuf" : "");
    }
    std::lock_guard lock(mu_);
    messages_.emplace_back(std::move(m.topic), std::move(m.payload));
    cv_.notify_all();
  });
}

TestDevice::~TestDevice() { (void)client_->disconnect(500ms); }

void TestDevice::connect() {
  auto s = client_->connect(10s);
  REQUIRE_MESSAGE(s, s.to_string());
  subscribe(prefix_ + "/" + id_ + "/#");
}

Status TestDevice::try_connect() { return client_->connect(5s); }

Status TestDevice::try_subscribe(const std::string& filter) {
  return client_->subscribe({filter}, 1, 5s);
}

bool TestDevice::connected() const { return client_->connected(); }

void TestDevice::subscribe(const std::string& filter) {
  auto s = client_->subscribe({filter}, 1, 10s);
  REQUIRE_MESSAGE(s, s.to_string());
}

void TestDevice::publish(const std::string& suffix, const std::string& payload,
                         const std::string& content_type) {
  const std::string ct = !content_type.empty()                     ? content_type
                         : encoding_ == twins::Encoding::kProtobuf ? "application/x-protobuf"
                                                                   : "";
  REQUIRE(client_->publish(prefix_ + "/" + id_ + "/" + suffix, payload, 1, ct));
}

void TestDevice::publish_topic(const std::string& topic, const std::string& payload,
                               bool retained) {
  REQUIRE(client_->publish(topic, payload, 1, {}, retained));
}

long metric(const std::string& text, const std::string& name) {
  const auto pos = text.find("\n" + name + " ");
  return pos == std::string::npos ? -1 : std::stol(text.substr(pos + name.size() + 2));
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

void TestDevice::answer_commands(std::optional<twins::ResultStatus> status) {
  std::lock_guard lock(mu_);
  answer_ = status;
}

std::map<std::string, int> TestDevice::deliveries() {
  std::lock_guard lock(mu_);
  return deliveries_;
}

std::vector<std::string> TestDevice::received(const std::string& suffix) {
  return received_on(prefix_ + "/" + id_ + "/" + suffix);
}

size_t TestDevice::messages_outside_own_topics() {
  const std::string own = prefix_ + "/" + id_ + "/";
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [t, p] : messages_) n += t.rfind(own, 0) == 0 ? 0 : 1;
  return n;
}

std::vector<std::string> TestDevice::received_on(const std::string& topic) {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [t, p] : messages_) {
    if (t == topic) out.push_back(p);
  }
  return out;
}

std::vector<std::string> TestDevice::wait_for(const std::string& suffix, size_t n,
                                              std::chrono::milliseconds timeout) {
  return wait_on(prefix_ + "/" + id_ + "/" + suffix, n, timeout);
}

std::vector<std::string> TestDevice::wait_on(const std::string& topic, size_t n,
                                             std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  std::vector<std::string> out;
  cv_.wait_for(lock, timeout, [&] {
    out.clear();
    for (const auto& [t, p] : messages_) {
      if (t == topic) out.push_back(p);
    }
    return out.size() >= n;
  });
  return out;
}

}  // namespace doppel::testing
