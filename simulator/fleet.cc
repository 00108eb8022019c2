#include "simulator/fleet.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <queue>
#include <random>
#include <thread>
#include <unordered_set>

#include "mqtt/aws_codec.h"
#include "mqtt/aws_topics.h"
#include "mqtt/client.h"
#include "mqtt/codec.h"
#include "mqtt/topics.h"
#include "twins/merge_patch.h"

namespace doppel::sim {
namespace {

using Clock = std::chrono::steady_clock;
using twins::Encoding;
using twins::InboundKind;
using twins::json;
using twins::OutboundKind;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// Runs delayed and periodic device actions on one thread.
class Fleet::Scheduler {
 public:
  Scheduler() : thread_([this] { run(); }) {}
  ~Scheduler() { stop(); }

  void at(Clock::time_point when, std::function<void()> fn) {
    std::lock_guard lock(mu_);
    tasks_.push(Task{when, seq_++, std::move(fn)});
    cv_.notify_one();
  }
  void after(double s, std::function<void()> fn) { at(Clock::now() + seconds(s), std::move(fn)); }
  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Task {
    Clock::time_point when;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Task& o) const { return when != o.when ? when > o.when : seq > o.seq; }
  };

  void run() {
    std::unique_lock lock(mu_);
    while (!stopped_) {
      if (tasks_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (tasks_.top().when > Clock::now()) {
        // A copy: waiting releases the lock, and a push may move the heap's storage.
        const Clock::time_point next = tasks_.top().when;
        cv_.wait_until(lock, next);
        continue;
      }
      Task t = tasks_.top();
      tasks_.pop();
      lock.unlock();
      t.fn();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Task, std::vector<Task>, std::greater<>> tasks_;
  uint64_t seq_ = 0;
  bool stopped_ = false;
  std::thread thread_;
};

struct Fleet::Device {
  size_t index = 0;
  std::string id;
  Encoding encoding = Encoding::kJson;
  bool ignores_deltas = false;
  bool ignores_commands = false;
  bool goes_silent = false;
  bool goes_offline = false;
  std::mutex mu;  // guards the fields below
  std::shared_ptr<mqtt::Client> client;
  json reported;
  std::unordered_set<std::string> seen_commands;
  std::mt19937_64 rng;
  bool silent = false;
  bool silenced_once = false;
  bool offline = false;
  uint64_t generation = 0;  // bumps on every reconnect; stale timers check it
  std::atomic<bool> connected{false};
};

Fleet::Fleet(FleetOptions options) : options_(std::move(options)) {
  std::mt19937_64 pick(options_.seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (size_t i = 0; i < options_.devices; ++i) {
    auto d = std::make_unique<Device>();
    d->index = i;
    d->id = device_id(i);
    const bool proto =
        options_.encoding == Encoding::kProtobuf || u(pick) < options_.protobuf_fraction;
    d->encoding = proto && options_.mqtt_version == 5 ? Encoding::kProtobuf : Encoding::kJson;
    d->ignores_deltas = u(pick) < options_.ignore_delta_fraction;
    d->ignores_commands = u(pick) < options_.command_ignore_fraction;
    d->goes_silent = u(pick) < options_.silent_fraction;
    d->goes_offline = u(pick) < options_.offline_fraction;
    d->rng.seed(options_.seed * 1000003 + i);
    std::uniform_real_distribution<double> temp(18, 26);
    d->reported = {{"temperature", std::round(temp(d->rng) * 10) / 10},
                   {"battery", 100},
                   {"firmware", "1.0.0"},
                   {"uptime_s", 0}};
    devices_.push_back(std::move(d));
  }
}

Fleet::~Fleet() { stop(); }

std::string Fleet::device_id(size_t i) const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06zu", options_.first_index + i);
  return options_.id_prefix + buf;
}

void Fleet::start() {
  scheduler_ = std::make_unique<Scheduler>();
  const auto start = Clock::now();
  for (auto& d : devices_) {
    const double at = static_cast<double>(d->index) / std::max(1.0, options_.connect_rate);
    Device* dev = d.get();
    scheduler_->at(start + seconds(at), [this, dev] { connect(*dev); });
  }
}

void Fleet::connect(Device& d) {
  if (stopping_.load()) return;
  mqtt::ClientOptions o;
  o.uri = options_.broker;
  o.client_id = d.id;
  if (auto it = options_.passwords.find(d.id); it != options_.passwords.end()) {
    o.username = d.id;
    o.password = it->second;
  } else if (!options_.password.empty()) {
    o.username = d.id;
    o.password = options_.password;
  }
  if (o.uri.rfind("ssl://", 0) == 0) o.tls = mqtt::TlsOptions{options_.ca_file, "", ""};
  o.mqtt_version = options_.mqtt_version;
  o.clean_start = true;
  o.keepalive_s = 30;
  o.max_buffered = 10'000;
  o.max_inflight = 100;
  const mqtt::WireCodec codec;
  twins::StatusMessage offline;
  offline.online = false;
  if (options_.dialect == twins::Dialect::kDoppel) {  // AWS ignores wills on its topics
    o.will = mqtt::WillMessage{
        mqtt::device_topic(options_.prefix, d.id, InboundKind::kStatus),
        codec.encode_device(offline, d.encoding),
        d.encoding == Encoding::kProtobuf ? std::string(mqtt::kProtobufContentType) : ""};
  }
  auto client = std::make_shared<mqtt::Client>(o);
  client->on_connected([this, &d] { on_connected(d); });
  client->on_connection_lost([this, &d](const std::string&) {
    d.connected.store(false);
    stats_.connection_losses.fetch_add(1);
  });
  client->on_message(
      [this, &d](mqtt::IncomingMessage&& m) { on_message(d, m.topic, m.payload, m.content_type); });
  {
    std::lock_guard lock(d.mu);
    ++d.generation;
    d.offline = false;
    d.client = client;
  }
  client->connect_in_background();
}

std::shared_ptr<mqtt::Client> Fleet::client_of(Device& d) {
  std::lock_guard lock(d.mu);
  return d.silent || d.offline ? nullptr : d.client;
}

void Fleet::on_connected(Device& d) {
  // Runs on Paho's thread after every (re)connect: subscribe, birth, full state.
  auto client = client_of(d);
  if (!client) return;
  d.connected.store(true);
  stats_.connects.fetch_add(1);
  if (options_.dialect == twins::Dialect::kAws) {
    // What the AWS SDK's thingShadow subscribes to (at QoS 0), and the get its firmware sends.
    const std::string shadow = std::string(mqtt::kAwsThingsPrefix) + d.id + "/shadow/";
    // And what its jobs client subscribes to: the next execution, and the answers to updates.
    const std::string jobs = std::string(mqtt::kAwsThingsPrefix) + d.id + "/jobs/";
    (void)client->subscribe(
        {shadow + "update/delta", shadow + "update/accepted", shadow + "update/rejected",
         shadow + "get/accepted", shadow + "get/rejected", jobs + "notify-next",
         jobs + "+/update/rejected"},
        0, std::chrono::milliseconds(0));
    send(d, InboundKind::kGet, twins::DeviceMessage(twins::GetMessage{}), d.encoding);
  } else {
    const std::string base = options_.prefix + "/" + d.id;
    (void)client->subscribe(
        {base + "/delta", base + "/twin", base + "/commands/+", base + "/errors"}, 1,
        std::chrono::milliseconds(0));
    twins::StatusMessage birth;
    birth.online = true;
    birth.interval_s = options_.interval_s;
    birth.encoding = d.encoding;
    send(d, InboundKind::kStatus, twins::DeviceMessage(birth), d.encoding);
  }
  stats_.births.fetch_add(1);
  json full;
  uint64_t generation;
  double first;
  {
    std::lock_guard lock(d.mu);
    full = d.reported;
    generation = d.generation;
    // Jitter, so the fleet does not report in lockstep.
    first = options_.interval_s * std::uniform_real_distribution<double>(0.5, 1.0)(d.rng);
  }
  report(d, full);
  scheduler_->after(first, [this, &d, generation] {
    if (current(d, generation)) tick(d);
  });
  if (d.goes_silent && !d.silenced_once) {
    d.silenced_once = true;
    scheduler_->after(options_.silent_after_s, [this, &d] {
      std::lock_guard lock(d.mu);
      d.silent = true;
      stats_.went_silent.fetch_add(1);
    });
    if (options_.silent_for_s > 0) {
      scheduler_->after(options_.silent_after_s + options_.silent_for_s, [this, &d] {
        std::lock_guard lock(d.mu);
        d.silent = false;
        stats_.spoke_again.fetch_add(1);
      });
    }
  }
  if (d.goes_offline) {
    scheduler_->after(options_.offline_after_s, [this, &d, generation] {
      if (current(d, generation)) go_offline(d);
    });
  }
}

bool Fleet::current(Device& d, uint64_t generation) {
  std::lock_guard lock(d.mu);
  return d.generation == generation && !d.offline;
}

bool Fleet::send(Device& d, InboundKind kind, const twins::DeviceMessage& message, Encoding enc,
                 const std::string& command_id) {
  auto client = client_of(d);
  if (!client) return false;
  const mqtt::WireCodec codec;
  if (options_.dialect == twins::Dialect::kAws) {
    if (kind == InboundKind::kStatus || kind == InboundKind::kCommandResult) return false;
    const auto op = kind == InboundKind::kGet ? twins::ShadowOp::kGet : twins::ShadowOp::kUpdate;
    const bool ok = client
                        ->publish(mqtt::aws_device_topic(d.id, op),
                                  mqtt::encode_aws_device(message), 1, std::string())
                        .is_ok();
    if (!ok) stats_.publish_failures.fetch_add(1);
    return ok;
  }
  const bool ok = client
                      ->publish(mqtt::device_topic(options_.prefix, d.id, kind, command_id),
                                codec.encode_device(message, enc), 1,
                                enc == Encoding::kProtobuf ? std::string(mqtt::kProtobufContentType)
                                                           : std::string())
                      .is_ok();
  if (!ok) stats_.publish_failures.fetch_add(1);
  return ok;
}

void Fleet::tick(Device& d) {
  if (stopping_.load()) return;
  json patch;
  uint64_t generation;
  {
    std::lock_guard lock(d.mu);
    if (d.offline) return;
    generation = d.generation;
    std::normal_distribution<double> step(0, 0.2);
    const double t = d.reported.value("temperature", 20.0) + step(d.rng);
    const int battery = std::max(0, d.reported.value("battery", 100) -
                                        (std::uniform_int_distribution<int>(0, 9)(d.rng) == 0));
    const int64_t uptime =
        d.reported.value("uptime_s", int64_t{0}) + static_cast<int64_t>(options_.interval_s);
    patch = {{"temperature", std::round(t * 10) / 10}, {"battery", battery}, {"uptime_s", uptime}};
    twins::apply_merge_patch(d.reported, patch);
  }
  report(d, patch);
  scheduler_->after(options_.interval_s, [this, &d, generation] {
    if (current(d, generation)) tick(d);
  });
}

void Fleet::report(Device& d, const json& state) {
  twins::ReportedMessage m;
  m.state = state;
  m.device_ts = wall_ms();
  if (send(d, InboundKind::kReported, twins::DeviceMessage(std::move(m)), d.encoding)) {
    stats_.reports.fetch_add(1);
  }
}

void Fleet::go_offline(Device& d) {
  std::shared_ptr<mqtt::Client> client;
  {
    std::lock_guard lock(d.mu);
    d.offline = true;
    ++d.generation;
    client = d.client;
  }
  stats_.went_offline.fetch_add(1);
  d.connected.store(false);
  // Disconnect with "send will": the broker publishes our offline status, as on a crash.
  if (client) (void)client->disconnect(std::chrono::milliseconds(200), true);
  if (options_.offline_for_s > 0) {
    scheduler_->after(options_.offline_for_s, [this, &d] { connect(d); });
  }
}

void Fleet::apply_delta(Device& d, const json& state) {
  stats_.deltas_received.fetch_add(1);
  if (d.ignores_deltas) {
    stats_.deltas_ignored.fetch_add(1);
    return;
  }
  scheduler_->after(options_.delta_delay_s, [this, &d, state] {
    {
      std::lock_guard lock(d.mu);
      if (d.offline) return;
      twins::apply_merge_patch(d.reported, state);
    }
    report(d, state);
    stats_.deltas_applied.fetch_add(1);
  });
}

void Fleet::on_aws_message(Device& d, const std::string& topic, const std::string& payload) {
  const std::string jobs = std::string(mqtt::kAwsThingsPrefix) + d.id + "/jobs/";
  if (topic == jobs + "notify-next") return on_aws_job(d, payload);
  if (topic.starts_with(jobs) && topic.ends_with("/rejected")) {
    stats_.errors_received.fetch_add(1);
    return;
  }
  const std::string shadow = std::string(mqtt::kAwsThingsPrefix) + d.id + "/shadow/";
  if (topic.compare(0, shadow.size(), shadow) != 0) return;
  const std::string rest = topic.substr(shadow.size());
  if (rest == "update/delta") {
    const json doc = json::parse(payload, nullptr, false);
    if (doc.is_object() && doc.contains("state") && doc["state"].is_object()) {
      apply_delta(d, doc["state"]);
    }
  } else if (rest.ends_with("/rejected")) {
    stats_.errors_received.fetch_add(1);
  }
}

void Fleet::on_aws_job(Device& d, const std::string& payload) {
  // An AWS IoT Jobs execution announced on notify-next (none: no "execution"): run it like a
  // command of Doppel's own dialect, and report SUCCEEDED or FAILED on jobs/{jobId}/update.
  const json doc = json::parse(payload, nullptr, false);
  if (!doc.is_object() || !doc.contains("execution") || !doc["execution"].is_object()) return;
  const json& execution = doc["execution"];
  if (!execution.contains("jobId") || !execution["jobId"].is_string()) return;
  const std::string id = execution["jobId"].get<std::string>();
  const std::string operation =
      execution.contains("jobDocument") && execution["jobDocument"].is_object()
          ? execution["jobDocument"].value("operation", std::string())
          : std::string();
  stats_.commands_received.fetch_add(1);
  bool fail;
  {
    std::lock_guard lock(d.mu);
    if (!d.seen_commands.insert(id).second) stats_.commands_duplicate.fetch_add(1);
    fail = std::uniform_real_distribution<double>(0, 1)(d.rng) < options_.command_fail_fraction;
  }
  if (d.ignores_commands) {
    stats_.commands_ignored.fetch_add(1);
    return;
  }
  scheduler_->after(options_.command_delay_s, [this, &d, id, operation, fail] {
    auto client = client_of(d);
    if (!client) return;
    // statusDetails values are strings, as AWS IoT Jobs requires.
    const json update = {
        {"status", fail ? "FAILED" : "SUCCEEDED"},
        {"statusDetails",
         fail ? json{{"error", "simulated failure"}}
              : json{{"operation", operation}, {"completed_at", std::to_string(wall_ms())}}}};
    const bool ok =
        client->publish(mqtt::aws_jobs_topic(d.id, id + "/update"), update.dump(), 1, std::string())
            .is_ok();
    if (!ok) {
      stats_.publish_failures.fetch_add(1);
      return;
    }
    (fail ? stats_.commands_failed : stats_.commands_succeeded).fetch_add(1);
  });
}

void Fleet::on_message(Device& d, const std::string& topic, const std::string& payload,
                       const std::string& content_type) {
  if (options_.dialect == twins::Dialect::kAws) return on_aws_message(d, topic, payload);
  const std::string base = options_.prefix + "/" + d.id + "/";
  if (topic.compare(0, base.size(), base) != 0) return;
  const std::string rest = topic.substr(base.size());
  const Encoding enc =
      content_type == mqtt::kProtobufContentType ? Encoding::kProtobuf : d.encoding;
  const mqtt::WireCodec codec;
  if (rest == "delta") {
    auto out = codec.decode_device(OutboundKind::kDelta, payload, enc);
    if (!out) return;
    apply_delta(d, std::get<twins::DeltaOut>(*out).state);
  } else if (rest == "errors") {
    stats_.errors_received.fetch_add(1);
  } else if (rest.rfind("commands/", 0) == 0 && rest.find('/', 9) == std::string::npos) {
    auto out = codec.decode_device(OutboundKind::kCommand, payload, enc);
    if (!out) return;
    const auto cmd = std::get<twins::CommandOut>(*out);
    stats_.commands_received.fetch_add(1);
    bool fail;
    {
      std::lock_guard lock(d.mu);
      // At-least-once delivery: a re-delivered command is answered again but run only once.
      if (!d.seen_commands.insert(cmd.id).second) stats_.commands_duplicate.fetch_add(1);
      fail = std::uniform_real_distribution<double>(0, 1)(d.rng) < options_.command_fail_fraction;
    }
    if (d.ignores_commands) {
      stats_.commands_ignored.fetch_add(1);
      return;
    }
    scheduler_->after(options_.command_delay_s, [this, &d, cmd, fail, enc] {
      twins::CommandResultMessage r;
      r.status = fail ? twins::ResultStatus::kFailed : twins::ResultStatus::kSucceeded;
      if (fail) {
        r.error = "simulated failure";
      } else {
        r.result = {{"command", cmd.name}, {"completed_at", wall_ms()}};
      }
      if (send(d, InboundKind::kCommandResult, twins::DeviceMessage(std::move(r)), enc, cmd.id)) {
        (fail ? stats_.commands_failed : stats_.commands_succeeded).fetch_add(1);
      }
    });
  }
}

void Fleet::stop() {
  if (stopping_.exchange(true)) return;
  if (scheduler_) scheduler_->stop();
  for (auto& d : devices_) {
    if (!d->connected.load()) continue;
    twins::StatusMessage offline;
    offline.online = false;
    send(*d, InboundKind::kStatus, twins::DeviceMessage(offline), d->encoding);
  }
  for (auto& d : devices_) {
    std::shared_ptr<mqtt::Client> client;
    {
      std::lock_guard lock(d->mu);
      client = d->client;
    }
    if (client) (void)client->disconnect(std::chrono::milliseconds(1000));
  }
}

size_t Fleet::connected() const {
  size_t n = 0;
  for (const auto& d : devices_) n += d->connected.load() ? 1 : 0;
  return n;
}

std::string Fleet::progress_line() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "connected %zu/%zu | reports %llu | deltas %llu applied of %llu | commands %llu ok "
                "%llu failed %llu ignored | errors %llu | offline %llu",
                connected(), devices_.size(),
                static_cast<unsigned long long>(stats_.reports.load()),
                static_cast<unsigned long long>(stats_.deltas_applied.load()),
                static_cast<unsigned long long>(stats_.deltas_received.load()),
                static_cast<unsigned long long>(stats_.commands_succeeded.load()),
                static_cast<unsigned long long>(stats_.commands_failed.load()),
                static_cast<unsigned long long>(stats_.commands_ignored.load()),
                static_cast<unsigned long long>(stats_.errors_received.load()),
                static_cast<unsigned long long>(stats_.went_offline.load()));
  return buf;
}

std::string Fleet::summary_json() const {
  const FleetStats& s = stats_;
  json j = {{"devices", devices_.size()},
            {"connected", connected()},
            {"connects", s.connects.load()},
            {"connection_losses", s.connection_losses.load()},
            {"births", s.births.load()},
            {"reports_sent", s.reports.load()},
            {"deltas_received", s.deltas_received.load()},
            {"deltas_applied", s.deltas_applied.load()},
            {"deltas_ignored", s.deltas_ignored.load()},
            {"commands_received", s.commands_received.load()},
            {"commands_duplicate", s.commands_duplicate.load()},
            {"commands_succeeded", s.commands_succeeded.load()},
            {"commands_failed", s.commands_failed.load()},
            {"commands_ignored", s.commands_ignored.load()},
            {"errors_received", s.errors_received.load()},
            {"went_offline", s.went_offline.load()},
            {"went_silent", s.went_silent.load()},
            {"spoke_again", s.spoke_again.load()},
            {"publish_failures", s.publish_failures.load()}};
  return j.dump(2);
}

}  // namespace doppel::sim
