#include "twins/record.h"

#include <cstring>
#include <type_traits>

namespace doppel::twins {
namespace {

json opt(const std::optional<Millis>& v) { return v ? json(*v) : json(); }

template <typename T>
std::optional<T> get_opt(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

// Writes MessagePack straight into a string: the twin's scalar fields are encoded without first
// building a JSON object (to_record runs for every change, so it is on the hot path).
class Packer {
 public:
  explicit Packer(std::string& out) : out_(out) {}
  // A map whose size is counted as its fields are written (never by hand):
  // begin_map(), field()..., end_map(). Always map 16 (a record has more than 15 fields).
  void begin_map() {
    byte(0xde);
    map_at_ = out_.size();
    be(0, 2);
    fields_ = 0;
  }
  void end_map() {
    out_[map_at_] = static_cast<char>((fields_ >> 8) & 0xff);
    out_[map_at_ + 1] = static_cast<char>(fields_ & 0xff);
  }
  void str(std::string_view s) {
    if (s.size() < 32) {
      byte(0xa0 | s.size());
    } else if (s.size() < 256) {
      byte(0xd9);
      byte(s.size());
    } else {
      byte(0xda);
      be(s.size(), 2);
    }
    out_.append(s);
  }
  void num(int64_t v) {
    if (v >= 0 && v < 128) {
      byte(static_cast<uint64_t>(v));
    } else {
      byte(0xd3);
      be(static_cast<uint64_t>(v), 8);
    }
  }
  void num(double d) {
    byte(0xcb);
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    be(bits, 8);
  }
  template <typename T>
  void opt(const std::optional<T>& v) {
    if (v) {
      num(*v);
    } else {
      byte(0xc0);
    }
  }
  void value(const json& j) { json::to_msgpack(j, out_); }
  template <typename T>
  void field(std::string_view key, const T& v) {
    ++fields_;
    str(key);
    if constexpr (std::is_same_v<T, json>) {
      value(v);
    } else if constexpr (std::is_convertible_v<T, std::string_view>) {
      str(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      num(static_cast<double>(v));
    } else if constexpr (std::is_integral_v<T>) {
      num(static_cast<int64_t>(v));
    } else {
      opt(v);
    }
  }

 private:
  void byte(uint64_t b) { out_.push_back(static_cast<char>(b & 0xff)); }
  void be(uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) byte(v >> (8 * i));
  }
  std::string& out_;
  size_t map_at_ = 0;  // where the open map's 16-bit size goes
  size_t fields_ = 0;  // written into the open map so far
};

std::string pack(const json& j) {
  std::string out;
  json::to_msgpack(j, out);
  return out;
}

json unpack(const std::string& s) { return json::from_msgpack(s.begin(), s.end()); }

Command command_from(const CommandRecord& r) {
  const json b = unpack(r.body);
  Command c;
  c.id = r.id;
  c.seq = r.seq;
  c.name = b.at("name").get<std::string>();
  c.args = b.at("args");
  c.idempotency_key = b.value("key", std::string());
  auto status = parse_command_status(r.status);
  if (!status) throw std::runtime_error("unknown command status '" + r.status + "'");
  c.status = *status;
  c.attempts = b.value("attempts", 0u);
  c.created_at = b.at("created").get<Millis>();
  c.expires_at = get_opt<Millis>(b, "expires");
  c.ack_deadline = get_opt<Millis>(b, "ack");
  for (const auto& h : b.at("history")) {
    auto st = parse_command_status(h.at(0).get<std::string>());
    if (!st) throw std::runtime_error("unknown command status in history");
    c.history.push_back({*st, h.at(1).get<Millis>()});
  }
  c.result = b.value("result", json());
  c.error = b.value("error", std::string());
  return c;
}

json runs_json(const std::vector<JobRun>& runs) {
  json out = json::array();
  for (const JobRun& r : runs) {
    json j = {{"job", r.job},        {"dv", r.desired_version}, {"sup", r.superseded},
              {"cmd", r.is_command}, {"cid", r.command_id},     {"att", r.attempts},
              {"ret", r.retries},    {"deadline", r.deadline}};
    if (r.is_command) {
      j["name"] = r.command_name;
      j["args"] = r.command_args;
      if (r.command_ttl_s) j["ttl"] = *r.command_ttl_s;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<JobRun> runs_from(const json& j) {
  std::vector<JobRun> runs;
  for (const auto& e : j) {
    JobRun r;
    r.job = e.at("job").get<std::string>();
    r.desired_version = e.at("dv").get<uint64_t>();
    r.superseded = e.at("sup").get<bool>();
    r.is_command = e.at("cmd").get<bool>();
    r.command_id = e.at("cid").get<std::string>();
    r.attempts = e.at("att").get<uint32_t>();
    r.retries = e.at("ret").get<uint32_t>();
    r.deadline = e.at("deadline").get<Millis>();
    if (r.is_command) {
      r.command_name = e.at("name").get<std::string>();
      r.command_args = e.at("args");
      r.command_ttl_s = get_opt<double>(e, "ttl");
    }
    runs.push_back(std::move(r));
  }
  return runs;
}

}  // namespace

TwinRecord to_record(Twin& twin, std::optional<Millis> next_deadline) {
  TwinRecord r;
  r.id = twin.id;
  r.version = twin.version;
  if (twin.serialized_desired_version != twin.desired_version) {
    twin.desired_text = to_text(twin.desired);
    twin.desired_meta_bytes = pack(twin.desired_meta);
    twin.serialized_desired_version = twin.desired_version;
  }
  r.desired = twin.desired_text;
  r.desired_meta = twin.desired_meta_bytes;
  r.reported = to_text(twin.reported);
  r.reported_meta = pack(twin.reported_meta);
  twin.desired_bytes = r.desired.size();
  twin.reported_bytes = r.reported.size();
  r.body.reserve(256);
  Packer p(r.body);
  p.begin_map();
  p.field("dv", twin.desired_version);
  p.field("rv", twin.reported_version);
  p.field("tags", twin.tags);
  p.field("conn", to_string(twin.connection));
  p.field("conn_since", twin.connection_since);
  p.field("live", to_string(twin.liveness));
  p.field("live_since", twin.liveness_since);
  p.field("seen", twin.last_seen);
  p.field("interval", twin.interval_s);
  p.field("stale_after", twin.stale_after_s);
  p.field("enc", to_string(twin.encoding));
  if (twin.dialect != Dialect::kDoppel) p.field("dia", to_string(twin.dialect));
  p.field("rec", to_string(twin.reconcile));
  p.field("rec_att", twin.reconcile_attempts);
  p.field("rec_dv", twin.reconcile_desired_version);
  p.field("rec_sent", twin.reconcile_last_sent);
  p.field("rec_next", twin.reconcile_next_retry);
  p.field("strategy", to_string(twin.command_strategy));
  p.field("next_seq", twin.next_command_seq);
  p.field("created", twin.created_at);
  p.field("snap", twin.events_since_snapshot);
  if (!twin.jobs.empty()) p.field("jobs", runs_json(twin.jobs));
  if (const auto& e = twin.last_error) {
    p.field("err",
            json{{"at", e->at}, {"topic", e->topic}, {"code", e->code}, {"msg", e->message}});
  }
  p.end_map();
  r.next_deadline = next_deadline;
  r.updated_at = twin.updated_at;
  r.tags = to_text(twin.tags);
  r.desired_version = twin.desired_version;
  r.reported_version = twin.reported_version;
  r.created_at = twin.created_at;
  r.liveness = to_string(twin.liveness);
  r.last_seen = twin.last_seen;
  r.connection = to_string(twin.connection);
  r.reconcile = to_string(twin.reconcile);
  r.reconcile_attempts = twin.reconcile_attempts;
  const CommandCounts counts = command_counts(twin);
  r.commands_queued = counts.queued;
  r.commands_sent = counts.sent;
  r.encoding = to_string(twin.encoding);
  r.dialect = to_string(twin.dialect);
  return r;
}

CommandRecord to_record(const Command& c) {
  json history = json::array();
  for (const auto& h : c.history) history.push_back({to_string(h.status), h.at});
  const json body = {{"name", c.name},
                     {"args", c.args},
                     {"key", c.idempotency_key},
                     {"attempts", c.attempts},
                     {"created", c.created_at},
                     {"expires", opt(c.expires_at)},
                     {"ack", opt(c.ack_deadline)},
                     {"history", std::move(history)},
                     {"result", c.result},
                     {"error", c.error}};
  return CommandRecord{c.seq, c.id, std::string(to_string(c.status)), pack(body)};
}

Result<Twin> from_record(const StoredTwin& stored) {
  const TwinRecord& r = stored.twin;
  try {
    const json b = unpack(r.body);
    Twin t;
    t.id = r.id;
    t.version = r.version;
    t.desired = json::parse(r.desired);
    t.reported = json::parse(r.reported);
    t.desired_meta = unpack(r.desired_meta);
    t.reported_meta = unpack(r.reported_meta);
    t.desired_text = r.desired;
    t.desired_meta_bytes = r.desired_meta;
    t.desired_bytes = r.desired.size();
    t.reported_bytes = r.reported.size();
    t.desired_version = b.at("dv").get<uint64_t>();
    t.serialized_desired_version = t.desired_version;
    t.reported_version = b.at("rv").get<uint64_t>();
    t.tags = b.at("tags");
    const std::string conn = b.at("conn").get<std::string>();
    t.connection = conn == "online"    ? ConnectionState::kOnline
                   : conn == "offline" ? ConnectionState::kOffline
                                       : ConnectionState::kUnknown;
    t.connection_since = b.at("conn_since").get<Millis>();
    const std::string live = b.at("live").get<std::string>();
    t.liveness = live == "fresh"   ? LivenessState::kFresh
                 : live == "stale" ? LivenessState::kStale
                                   : LivenessState::kUnknown;
    t.liveness_since = b.value("live_since", Millis{0});
    t.last_seen = get_opt<Millis>(b, "seen");
    t.interval_s = get_opt<double>(b, "interval");
    t.stale_after_s = get_opt<double>(b, "stale_after");
    t.encoding = parse_encoding(b.at("enc").get<std::string>()).value_or(Encoding::kJson);
    if (auto dia = b.find("dia"); dia != b.end()) {
      t.dialect = parse_dialect(dia->get<std::string>()).value_or(Dialect::kDoppel);
    }
    const std::string rec = b.at("rec").get<std::string>();
    t.reconcile = rec == "pending"  ? ReconcileState::kPending
                  : rec == "failed" ? ReconcileState::kFailed
                                    : ReconcileState::kConverged;
    t.reconcile_attempts = b.at("rec_att").get<uint32_t>();
    t.reconcile_desired_version = b.at("rec_dv").get<uint64_t>();
    t.reconcile_last_sent = get_opt<Millis>(b, "rec_sent");
    t.reconcile_next_retry = get_opt<Millis>(b, "rec_next");
    t.command_strategy =
        parse_strategy(b.at("strategy").get<std::string>()).value_or(CommandStrategy::kSequential);
    t.next_command_seq = b.at("next_seq").get<uint64_t>();
    t.created_at = b.at("created").get<Millis>();
    t.events_since_snapshot = b.value("snap", kSnapshotEveryEvents);
    t.updated_at = r.updated_at;
    if (auto jobs = b.find("jobs"); jobs != b.end()) t.jobs = runs_from(*jobs);
    if (auto err = b.find("err"); err != b.end()) {
      t.last_error =
          DeviceError{err->at("at").get<Millis>(), err->at("topic").get<std::string>(),
                      err->at("code").get<std::string>(), err->at("msg").get<std::string>()};
    }
    for (const auto& c : stored.commands) t.commands.push_back(command_from(c));
    return t;
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal,
                  "stored twin '" + r.id + "' cannot be read: " + std::string(e.what()));
  }
}

}  // namespace doppel::twins
