#include "twins/runtime.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <list>
#include <queue>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "twins/detail/inbox.h"
#include "twins/fnv1a.h"
#include "twins/log.h"

namespace doppel::twins {
namespace {

using ReplyPromise = std::shared_ptr<std::promise<ApiReply>>;

struct ApiCall {
  std::string id;
  ApiRequest request;
  ReplyPromise reply;
};
// A deadline of twin `id` is due at `due` (from the scanner or a commit callback).
struct WakeDue {
  std::string id;
  Millis due = 0;
};
// The clock moved (FakeClock) or the runtime wants timers re-checked.
struct Tick {};
struct Barrier {
  std::shared_ptr<std::promise<void>> done;
};
using ShardMessage = std::variant<DeviceInput, ApiCall, WakeDue, Tick, Barrier>;

struct Timer {
  Millis due;
  std::string id;
  bool operator>(const Timer& o) const { return due > o.due; }
};

std::string etag_of(const Twin& twin) { return "\"" + std::to_string(twin.version) + "\""; }

Status not_found(const std::string& id) {
  return Status(StatusCode::kNotFound, "twin '" + id + "' does not exist");
}

constexpr Millis kSweepIntervalMs = 1000;
constexpr size_t kDueScanPage = 10000;

}  // namespace

struct Runtime::Stats {
  explicit Stats(Metrics& m) {
    for (auto k : {InboundKind::kReported, InboundKind::kGet, InboundKind::kStatus,
                   InboundKind::kCommandResult}) {
      in[static_cast<size_t>(k)] =
          &m.counter("doppel_device_messages_total", "Device messages received by the runtime",
                     "kind=\"" + std::string(to_string(k)) + "\"");
    }
    for (int e = 0; e <= static_cast<int>(TwinEvent::kIgnoredCommandResult); ++e) {
      events[e] = &m.counter("doppel_twin_events_total", "Twin events by type",
                             "event=\"" + std::string(to_string(static_cast<TwinEvent>(e))) + "\"");
    }
    for (auto c : {StatusCode::kMalformed, StatusCode::kInvalidArgument, StatusCode::kInvalidId,
                   StatusCode::kTooLarge, StatusCode::kTooDeep}) {
      rejected[static_cast<size_t>(c)] =
          &m.counter("doppel_device_messages_rejected_total",
                     "Device messages rejected with an error reply, by code",
                     "code=\"" + std::string(code_name(c)) + "\"");
    }
    rejected_other =
        &m.counter("doppel_device_messages_rejected_total",
                   "Device messages rejected with an error reply, by code", "code=\"other\"");
    api_calls = &m.counter("doppel_api_calls_total", "Operator requests run by the runtime");
    wakes = &m.counter("doppel_twin_wakes_total", "Twins loaded from the store into memory");
    evictions = &m.counter("doppel_twin_evictions_total", "Twins hibernated (dropped from memory)");
    alarms = &m.counter("doppel_alarms_fired_total", "Twin alarms that fired and changed a twin");
    lateness =
        &m.histogram("doppel_alarm_lateness_seconds", "How late alarms fired after their deadline",
                     {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5});
    m.gauge_fn("doppel_alarm_lateness_max_seconds", "The latest any alarm fired after its deadline",
               [this] { return static_cast<double>(lateness_max_ms.value()) / 1000.0; });
    early = &m.counter("doppel_alarms_early_total",
                       "Alarms that fired before their deadline (must stay 0)");
    internal_errors = &m.counter("doppel_shard_internal_errors_total",
                                 "Unexpected exceptions in shard handlers (request failed, twin "
                                 "reloaded)");
    store_failures = &m.counter("doppel_store_failures_total",
                                "Twin changes the store failed to commit (twin reloaded)");
    ignored = &m.counter("doppel_device_messages_ignored_total",
                         "Device messages for unknown twins that create nothing (results, wills)");
    total = &m.gauge("doppel_twins", "Registered twins (in memory or hibernated)");
    for (auto st : {CommandStatus::kQueued, CommandStatus::kSent, CommandStatus::kSucceeded,
                    CommandStatus::kFailed, CommandStatus::kRejected, CommandStatus::kExpired,
                    CommandStatus::kTimedOut, CommandStatus::kCancelled}) {
      const std::string label = "status=\"" + std::string(to_string(st)) + "\"";
      transitions[static_cast<size_t>(st)] =
          &m.counter("doppel_command_transitions_total", "Commands entering each state", label);
      if (!is_terminal(st)) {
        unfinished[static_cast<size_t>(st)] = &m.gauge(
            "doppel_commands_unfinished", "Commands queued or sent, over all twins", label);
      }
    }
  }
  // Counts one command state change.
  void transition(std::optional<CommandStatus> from, CommandStatus to) {
    transitions[static_cast<size_t>(to)]->inc();
    if (from && !is_terminal(*from)) unfinished[static_cast<size_t>(*from)]->add(-1);
    if (!is_terminal(to)) unfinished[static_cast<size_t>(to)]->add(1);
  }
  Counter* in[4] = {};
  Counter* events[16] = {};
  Counter* rejected[16] = {};
  Counter* rejected_other = nullptr;
  Counter* api_calls = nullptr;
  Counter* wakes = nullptr;
  Counter* evictions = nullptr;
  Counter* alarms = nullptr;
  Histogram* lateness = nullptr;
  Gauge lateness_max_ms;  // rendered in seconds
  Counter* early = nullptr;
  Counter* store_failures = nullptr;
  Counter* internal_errors = nullptr;
  Counter* ignored = nullptr;
  Gauge* total = nullptr;
  Counter* transitions[8] = {};
  Gauge* unfinished[8] = {};
};

// One shard: a thread, its inbox, the twins it owns, their LRU order and its timer heap.
class Shard {
 public:
  Shard(Runtime& rt, size_t index)
      : rt_(rt),
        index_(index),
        inbox_(rt.options_.inbox_capacity),
        cap_(std::max<size_t>(1, rt.options_.max_hot_twins / rt.options_.shards)) {}

  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    stopping_.store(true);
    inbox_.wake();
    if (thread_.joinable()) thread_.join();
    inbox_.close();
  }
  void post(ShardMessage m, bool external) { inbox_.push(std::move(m), external); }
  // A change of twin `id` failed to commit, or its handler threw: the shard drops the twin from
  // memory before it handles anything else, and it reloads its committed state when next used.
  // Any thread.
  void mark_failed(const std::string& id) {
    {
      std::lock_guard lock(failed_mu_);
      failed_.insert(id);
      failures_pending_.store(true);
    }
    post(Tick{}, false);
  }
  size_t hot() const { return hot_.load(std::memory_order_relaxed); }

 private:
  struct HotTwin {
    Twin twin;
    uint64_t last_write = 0;  // store sequence of this twin's latest write
    Millis last_access = 0;
    std::optional<Millis> scheduled;  // earliest timer entry held for it
    bool deleted = false;             // tombstone until the delete is committed
    std::list<HotTwin*>::iterator lru;
  };

  void run();
  void handle(DeviceInput& in);
  void handle(ApiCall& call);
  void handle(WakeDue& w);
  // Drops the twins marked failed and tells the store to discard their queued writes.
  void drain_failures();
  bool failure_pending(const std::string& id);
  // Logs an exception thrown while handling `m`, fails its request, and drops its twin.
  void on_exception(ShardMessage& m, const char* what);
  void handle(Tick&) { fire_timers(); }
  void handle(Barrier& b) {
    fire_timers();  // what was due before the barrier has fired when it returns
    b.done->set_value();
  }

  void api_get(ApiCall& call, HotTwin* h);
  void api_provision(ApiCall& call, HotTwin* h, const TwinSettings& settings, bool is_patch);
  void api_delete(ApiCall& call, HotTwin* h);
  void api_desired(ApiCall& call, HotTwin* h, const UpdateDesired& req);
  void api_enqueue(ApiCall& call, HotTwin* h, const CommandRequest& req);
  void api_list_commands(ApiCall& call, HotTwin* h, const ListCommands& req);
  void api_command(ApiCall& call, HotTwin* h, const std::string& command_id, bool cancel);

  Result<HotTwin*> find_or_load(const std::string& id);
  HotTwin* insert(Twin twin);
  void touch(HotTwin& h, Millis now);
  void evict(HotTwin* h);
  void evict_over_cap();
  void sweep(Millis now);
  void fire_timers();
  bool schedule(HotTwin& h, std::optional<Millis> due);
  // Persists what `out` changed and releases its outputs (and `after`) once committed.
  void commit(HotTwin& h, Outcome& out, CommitCallback after);
  void reply_after_commit(HotTwin& h, Outcome& out, const ReplyPromise& reply, ApiReply r);
  void send_error(const DeviceInput& in, Encoding enc, const Status& status,
                  const std::string& token);
  json document(const Twin& twin) const {
    return twin_document(twin, rt_.logic_.stale_after_ms(twin));
  }
  json document(const HotTwin& h) const { return document(h.twin); }

  // Runs `step` on the twin (or, when `may_create`, on a new one that is kept only if the step
  // succeeds); replies with the step's answer once its changes are committed, or with its error
  // at once (nothing changed).
  using Step = std::function<Result<ApiReply>(Twin& twin, Millis now, Outcome& out)>;
  void mutate(ApiCall& call, HotTwin* h, bool may_create, const Step& step);
  Millis now() const { return rt_.clock_.now_ms(); }

  Runtime& rt_;
  const size_t index_;
  detail::Inbox<ShardMessage> inbox_;
  const size_t cap_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> hot_{0};
  std::unordered_map<std::string, std::unique_ptr<HotTwin>> twins_;
  std::list<HotTwin*> lru_;  // front: most recently used
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::mutex failed_mu_;
  std::unordered_set<std::string> failed_;  // under failed_mu_
  std::atomic<bool> failures_pending_{false};
};

void Shard::run() {
  std::vector<ShardMessage> batch;
  Millis next_sweep = now() + kSweepIntervalMs;
  while (true) {
    const Millis t = now();
    Millis wait = std::min<Millis>(next_sweep - t, kSweepIntervalMs);
    if (!timers_.empty()) wait = std::min(wait, timers_.top().due - t);
    wait = std::max<Millis>(wait, 0);
    inbox_.pop_all(batch, std::chrono::steady_clock::now() + std::chrono::milliseconds(wait));
    for (auto& m : batch) {
      drain_failures();
      try {
        std::visit([this](auto& msg) { handle(msg); }, m);
      } catch (const std::exception& e) {
        on_exception(m, e.what());
      } catch (...) {
        on_exception(m, "unknown exception");
      }
    }
    batch.clear();
    drain_failures();
    try {
      fire_timers();
    } catch (const std::exception& e) {
      log_error("shard " + std::to_string(index_) +
                ": unexpected exception in a timer: " + e.what());
    }
    if (const Millis t2 = now(); t2 >= next_sweep) {
      sweep(t2);
      next_sweep = t2 + kSweepIntervalMs;
    }
    if (stopping_.load() && inbox_.size() == 0) break;
  }
}

Result<Shard::HotTwin*> Shard::find_or_load(const std::string& id) {
  if (auto it = twins_.find(id); it != twins_.end()) {
    return it->second->deleted ? nullptr : it->second.get();
  }
  auto stored = rt_.store_.load(id);
  if (!stored) return stored.status();
  if (!*stored) return nullptr;
  auto twin = from_record(**stored);
  if (!twin) {
    log_error(twin.status().to_string());
    return twin.status();
  }
  rt_.stats_->wakes->inc();
  return insert(std::move(*twin));
}

Shard::HotTwin* Shard::insert(Twin twin) {
  auto [it, inserted] = twins_.try_emplace(twin.id);
  if (inserted) {
    it->second = std::make_unique<HotTwin>();
    HotTwin* h = it->second.get();
    lru_.push_front(h);
    h->lru = lru_.begin();
    hot_.fetch_add(1, std::memory_order_relaxed);
  }
  HotTwin* h = it->second.get();
  h->twin = std::move(twin);
  h->deleted = false;  // replaces a tombstone; its writes follow the delete in sequence
  h->last_access = now();
  evict_over_cap();
  return h;
}

void Shard::touch(HotTwin& h, Millis t) {
  h.last_access = t;
  if (h.lru != lru_.begin()) lru_.splice(lru_.begin(), lru_, h.lru);
}

void Shard::evict(HotTwin* h) {
  lru_.erase(h->lru);
  rt_.stats_->evictions->inc();
  hot_.fetch_sub(1, std::memory_order_relaxed);
  twins_.erase(twins_.find(h->twin.id));  // its timer entries stay and wake it when due
}

void Shard::evict_over_cap() {
  if (twins_.size() <= cap_) return;
  const uint64_t committed = rt_.store_.committed_seq();
  std::vector<HotTwin*> victims;
  size_t remaining = twins_.size();
  for (auto it = lru_.rbegin(); it != lru_.rend() && remaining > cap_; ++it) {
    if (std::next(it) == lru_.rend()) break;      // never the newest: it is in use
    if ((*it)->last_write > committed) continue;  // not durable yet
    victims.push_back(*it);
    --remaining;
  }
  for (HotTwin* h : victims) evict(h);
}

void Shard::sweep(Millis t) {
  const Millis idle = seconds_to_ms(rt_.options_.hibernate_after_s);
  const uint64_t committed = rt_.store_.committed_seq();
  std::vector<HotTwin*> victims;
  size_t remaining = twins_.size();
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    HotTwin* h = *it;
    const bool over = remaining > cap_;
    if (!over && t - h->last_access < idle && !h->deleted) break;
    if (h->last_write > committed) continue;  // not durable yet: the store is behind
    victims.push_back(h);
    --remaining;
  }
  for (HotTwin* h : victims) evict(h);
}

bool Shard::schedule(HotTwin& h, std::optional<Millis> due) {
  if (!due) return false;
  if (h.scheduled && *h.scheduled <= *due) return true;  // that entry fires first, re-arms
  if (*due > rt_.horizon()) return false;                // the scanner will bring it
  timers_.push({*due, h.twin.id});
  h.scheduled = due;
  return true;
}

void Shard::fire_timers() {
  while (!timers_.empty()) {
    const Millis t = now();
    if (timers_.top().due > t) return;
    Timer timer = timers_.top();
    timers_.pop();
    HotTwin* h = nullptr;
    if (auto it = twins_.find(timer.id); it != twins_.end()) {
      h = it->second.get();
      if (h->deleted) continue;
      if (h->scheduled && *h->scheduled == timer.due) h->scheduled.reset();
    } else {
      auto loaded = find_or_load(timer.id);
      if (!loaded) {
        log_warn("alarm for twin '" + timer.id +
                 "' cannot load it: " + loaded.status().to_string());
        continue;
      }
      if (*loaded == nullptr) continue;  // deleted since
      h = *loaded;
    }
    Outcome out;
    rt_.logic_.on_alarm(h->twin, t, out);
    Runtime::Stats& stats = *rt_.stats_;
    for (Millis deadline : out.fired) {
      stats.alarms->inc();
      stats.lateness->observe(static_cast<double>(t - deadline) / 1000.0);
      stats.lateness_max_ms.raise_to(t - deadline);
      if (t < deadline) stats.early->inc();
    }
    commit(*h, out, nullptr);
  }
}

void Shard::commit(HotTwin& h, Outcome& out, CommitCallback after) {
  Runtime::Stats& stats = *rt_.stats_;
  for (TwinEvent e : out.events) {
    stats.events[static_cast<size_t>(e)]->inc();
    const bool notable = e == TwinEvent::kStale || e == TwinEvent::kReconcileFailed ||
                         e == TwinEvent::kCommandTimedOut || e == TwinEvent::kCommandExpired;
    const LogLevel level = notable ? LogLevel::kInfo : LogLevel::kDebug;
    if (log_enabled(level)) log(level, std::string(to_string(e)) + " twin=" + h.twin.id);
    if (e == TwinEvent::kCreated) stats.total->add(1);
  }
  for (const auto& [from, to] : out.command_transitions) stats.transition(from, to);
  std::vector<Outbound> outbound;
  outbound.reserve(out.outputs.size());
  for (const DeviceOutput& o : out.outputs) {
    Outbound msg;
    msg.device_id = h.twin.id;
    msg.kind = kind_of(o);
    if (const auto* cmd = std::get_if<CommandOut>(&o)) msg.command_id = cmd->id;
    msg.encoding = h.twin.encoding;
    msg.payload = rt_.codec_.encode(o, msg.encoding);
    outbound.push_back(std::move(msg));
  }
  const std::optional<Millis> deadline = rt_.logic_.next_deadline(h.twin);
  const bool scheduled = schedule(h, deadline);
  const bool needs_release = !outbound.empty() || after || (!scheduled && deadline);

  CommitCallback release = [&rt = rt_, index = index_, id = h.twin.id,
                            outbound = std::move(outbound), after = std::move(after), deadline,
                            scheduled](const Status& s) mutable {
    if (s.is_ok()) {
      for (auto& msg : outbound) rt.channel_.publish(std::move(msg));
      // A deadline the scanner may have passed over while this write was in flight.
      if (!scheduled && deadline && *deadline <= rt.horizon()) {
        rt.shards_[index]->post(WakeDue{id, *deadline}, false);
      }
    } else {
      rt.stats_->store_failures->inc();
      log_error("store failed to commit twin '" + id + "': " + s.to_string() +
                "; reloading it from the store");
      rt.shards_[index]->mark_failed(id);
    }
    if (after) after(s);
  };

  if (out.changed()) {
    TwinWrite w;
    w.id = h.twin.id;
    w.twin = to_record(h.twin, deadline);
    for (uint64_t seq : out.commands_changed) {
      for (const auto& c : h.twin.commands) {
        if (c.seq == seq) w.upsert_commands.push_back(to_record(c));
      }
    }
    w.delete_commands = std::move(out.commands_removed);
    h.last_write = rt_.store_.write(std::move(w), std::move(release));
  } else if (needs_release) {
    if (h.last_write > rt_.store_.committed_seq()) {
      rt_.store_.when_committed(h.last_write, std::move(release));
    } else if (failure_pending(h.twin.id)) {  // read after committed_seq(): see ports.h
      release(Status(StatusCode::kUnavailable,
                     "an earlier change of twin '" + h.twin.id + "' failed to commit"));
    } else {
      release(Status::ok());
    }
  }
}

void Shard::reply_after_commit(HotTwin& h, Outcome& out, const ReplyPromise& reply, ApiReply r) {
  commit(h, out, [reply, r = std::move(r)](const Status& s) mutable {
    if (s.is_ok()) {
      reply->set_value(std::move(r));
    } else {
      reply->set_value(ApiReply{
          Status(StatusCode::kUnavailable, "the change could not be committed: " + s.message())});
    }
  });
}

void Shard::send_error(const DeviceInput& in, Encoding enc, const Status& status,
                       const std::string& token) {
  Runtime::Stats& stats = *rt_.stats_;
  const auto code = static_cast<size_t>(status.code());
  (stats.rejected[code] != nullptr ? stats.rejected[code] : stats.rejected_other)->inc();
  if (log_enabled(LogLevel::kDebug)) {
    log_debug("rejected message on " + in.topic + ": " + status.to_string());
  }
  Outbound msg;
  msg.device_id = in.device_id;
  msg.kind = OutboundKind::kError;
  msg.encoding = enc;
  msg.payload = rt_.codec_.encode(
      ErrorOut{in.topic, std::string(code_name(status.code())), status.message(), token}, enc);
  rt_.channel_.publish(std::move(msg));
}

void Shard::handle(DeviceInput& in) {
  rt_.stats_->in[static_cast<size_t>(in.kind)]->inc();
  auto found = find_or_load(in.device_id);
  if (!found) {
    log_error("dropping message for '" + in.device_id + "': " + found.status().to_string());
    return;
  }
  HotTwin* h = *found;
  const Encoding enc = in.content_encoding.value_or(h ? h->twin.encoding : Encoding::kJson);
  auto decoded = rt_.codec_.decode(in.kind, in.payload, enc, rt_.logic_.policy().limits);
  if (!decoded) {
    send_error(in, enc, decoded.status(), "");
    return;
  }
  DeviceMessage& msg = *decoded;
  if (h == nullptr) {
    const auto* status = std::get_if<StatusMessage>(&msg);
    if (in.kind == InboundKind::kCommandResult || (status != nullptr && !status->online)) {
      rt_.stats_->ignored->inc();
      return;
    }
  }
  const Millis t = now();
  Outcome out;
  Twin fresh;
  Twin& twin = h != nullptr ? h->twin : (fresh = rt_.logic_.create(in.device_id, t, out));
  const TwinLogic& logic = rt_.logic_;
  Status result;
  std::string token;
  if (auto* m = std::get_if<ReportedMessage>(&msg)) {
    token = m->token;
    result = logic.on_reported(twin, *m, t, out);
  } else if (auto* g = std::get_if<GetMessage>(&msg)) {
    logic.on_get(twin, *g, t, out);
  } else if (auto* s = std::get_if<StatusMessage>(&msg)) {
    logic.on_status(twin, *s, enc, t, out);
  } else if (auto* r = std::get_if<CommandResultMessage>(&msg)) {
    logic.on_command_result(twin, in.command_id, *r, t, out);
  }
  if (!result) {
    send_error(in, enc, result, token);
    return;  // nothing changed (a new twin is simply not kept)
  }
  if (h == nullptr) h = insert(std::move(fresh));
  touch(*h, t);
  commit(*h, out, nullptr);
}

void Shard::handle(ApiCall& call) {
  rt_.stats_->api_calls->inc();
  auto found = find_or_load(call.id);
  if (!found) {
    call.reply->set_value(ApiReply{
        Status(StatusCode::kUnavailable,
               "twin '" + call.id + "' could not be loaded: " + found.status().message())});
    return;
  }
  HotTwin* h = *found;
  if (h != nullptr) touch(*h, now());
  std::visit(
      [&](auto& req) {
        using T = std::decay_t<decltype(req)>;
        if constexpr (std::is_same_v<T, GetTwin>) {
          api_get(call, h);
        } else if constexpr (std::is_same_v<T, ProvisionTwin>) {
          api_provision(call, h, req.settings, false);
        } else if constexpr (std::is_same_v<T, PatchTwin>) {
          api_provision(call, h, req.settings, true);
        } else if constexpr (std::is_same_v<T, DeleteTwin>) {
          api_delete(call, h);
        } else if constexpr (std::is_same_v<T, UpdateDesired>) {
          api_desired(call, h, req);
        } else if constexpr (std::is_same_v<T, EnqueueCommand>) {
          api_enqueue(call, h, req.request);
        } else if constexpr (std::is_same_v<T, ListCommands>) {
          api_list_commands(call, h, req);
        } else if constexpr (std::is_same_v<T, GetCommand>) {
          api_command(call, h, req.command_id, false);
        } else if constexpr (std::is_same_v<T, CancelCommand>) {
          api_command(call, h, req.command_id, true);
        }
      },
      call.request);
}

void Shard::api_get(ApiCall& call, HotTwin* h) {
  if (h == nullptr) return call.reply->set_value(ApiReply{not_found(call.id)});
  Outcome none;
  reply_after_commit(*h, none, call.reply,
                     ApiReply{Status::ok(), ReplyKind::kOk, document(*h), etag_of(h->twin)});
}

void Shard::mutate(ApiCall& call, HotTwin* h, bool may_create, const Step& step) {
  if (h == nullptr && !may_create) return call.reply->set_value(ApiReply{not_found(call.id)});
  const Millis t = now();
  Outcome out;
  Twin fresh;
  Twin& twin = h != nullptr ? h->twin : (fresh = rt_.logic_.create(call.id, t, out));
  auto reply = step(twin, t, out);
  if (!reply) return call.reply->set_value(ApiReply{reply.status()});  // nothing changed
  if (h == nullptr) h = insert(std::move(fresh));
  reply_after_commit(*h, out, call.reply, std::move(*reply));
}

void Shard::api_provision(ApiCall& call, HotTwin* h, const TwinSettings& settings, bool is_patch) {
  const ReplyKind kind = h == nullptr ? ReplyKind::kCreated : ReplyKind::kOk;
  mutate(call, h, !is_patch, [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
    if (Status s = rt_.logic_.apply_settings(twin, settings, is_patch, t, out); !s) return s;
    return ApiReply{Status::ok(), kind, document(twin), etag_of(twin)};
  });
}

void Shard::api_delete(ApiCall& call, HotTwin* h) {
  if (h == nullptr) return call.reply->set_value(ApiReply{not_found(call.id)});
  for (const auto& c : h->twin.commands) {
    if (!is_terminal(c.status)) rt_.stats_->unfinished[static_cast<size_t>(c.status)]->add(-1);
  }
  h->deleted = true;
  h->twin = Twin();
  h->twin.id = call.id;
  h->scheduled.reset();
  TwinWrite w;
  w.id = call.id;
  w.delete_twin = true;
  rt_.stats_->total->add(-1);
  h->last_write = rt_.store_.write(std::move(w), [reply = call.reply](const Status& s) {
    reply->set_value(s.is_ok()
                         ? ApiReply{Status::ok(), ReplyKind::kNoContent}
                         : ApiReply{Status(StatusCode::kUnavailable,
                                           "the delete could not be committed: " + s.message())});
  });
}

void Shard::api_desired(ApiCall& call, HotTwin* h, const UpdateDesired& req) {
  mutate(call, h, rt_.options_.auto_provision,
         [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
           if (Status s = rt_.logic_.update_desired(twin, req, t, out); !s) return s;
           return ApiReply{Status::ok(), ReplyKind::kOk, document(twin), etag_of(twin)};
         });
}

void Shard::api_enqueue(ApiCall& call, HotTwin* h, const CommandRequest& req) {
  mutate(call, h, rt_.options_.auto_provision,
         [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
           auto cmd = rt_.logic_.enqueue(twin, req, t, out);
           if (!cmd) return cmd.status();
           json body = {{"id", (*cmd)->id}, {"status", to_string((*cmd)->status)}};
           return ApiReply{Status::ok(), ReplyKind::kAccepted, std::move(body)};
         });
}

void Shard::api_list_commands(ApiCall& call, HotTwin* h, const ListCommands& req) {
  if (h == nullptr) return call.reply->set_value(ApiReply{not_found(call.id)});
  json items = json::array();
  std::optional<uint64_t> last;
  bool more = false;
  for (const auto& c : h->twin.commands) {
    if (c.seq <= req.after_seq) continue;
    if (req.status && c.status != *req.status) continue;
    if (items.size() == req.limit) {
      more = true;
      break;
    }
    items.push_back(command_document(c));
    last = c.seq;
  }
  json body = {{"items", std::move(items)},
               {"next_cursor", more && last ? json(std::to_string(*last)) : json()}};
  Outcome none;
  reply_after_commit(*h, none, call.reply, ApiReply{Status::ok(), ReplyKind::kOk, body});
}

void Shard::api_command(ApiCall& call, HotTwin* h, const std::string& command_id, bool cancel) {
  if (h == nullptr) return call.reply->set_value(ApiReply{not_found(call.id)});
  Outcome out;
  if (cancel) {
    auto cancelled = rt_.logic_.cancel(h->twin, command_id, now(), out);
    if (!cancelled) return call.reply->set_value(ApiReply{cancelled.status()});
    return reply_after_commit(*h, out, call.reply,
                              ApiReply{Status::ok(), ReplyKind::kOk, std::move(*cancelled)});
  }
  const Command* c = find_command(h->twin, command_id);
  if (c == nullptr) {
    return call.reply->set_value(ApiReply{Status(
        StatusCode::kNotFound, "twin '" + call.id + "' has no command '" + command_id + "'")});
  }
  reply_after_commit(*h, out, call.reply,
                     ApiReply{Status::ok(), ReplyKind::kOk, command_document(*c)});
}

void Shard::handle(WakeDue& w) {
  if (auto it = twins_.find(w.id); it != twins_.end()) {
    HotTwin& h = *it->second;
    if (h.deleted || (h.scheduled && *h.scheduled <= w.due)) return;
    h.scheduled = w.due;
  }
  timers_.push({w.due, w.id});
}

void Shard::drain_failures() {
  if (!failures_pending_.load()) return;
  std::unordered_set<std::string> failed;
  {
    std::lock_guard lock(failed_mu_);
    failed.swap(failed_);
    failures_pending_.store(false);
  }
  for (const auto& id : failed) {
    if (auto it = twins_.find(id); it != twins_.end()) evict(it->second.get());
    rt_.store_.discard(id);  // writes made on the dropped copy fail instead of applying
  }
}

bool Shard::failure_pending(const std::string& id) {
  if (!failures_pending_.load()) return false;
  std::lock_guard lock(failed_mu_);
  return failed_.count(id) > 0;
}

void Shard::on_exception(ShardMessage& m, const char* what) {
  const std::string id = std::visit(
      [](auto& msg) -> std::string {
        using T = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<T, DeviceInput>) {
          return msg.device_id;
        } else if constexpr (std::is_same_v<T, ApiCall> || std::is_same_v<T, WakeDue>) {
          return msg.id;
        } else {
          return {};
        }
      },
      m);
  log_error("shard " + std::to_string(index_) + ": unexpected exception for twin '" + id +
            "': " + what + "; the request failed and the twin reloads its committed state");
  rt_.stats_->internal_errors->inc();
  if (auto* call = std::get_if<ApiCall>(&m)) {
    try {
      call->reply->set_value(ApiReply{
          Status(StatusCode::kInternal, "internal error while handling twin '" + id +
                                            "'; nothing was applied; see the gateway log")});
    } catch (const std::future_error&) {
      // Already answered (the exception came after the reply).
    }
  }
  if (!id.empty()) mark_failed(id);
}

Runtime::Runtime(RuntimeOptions options, TwinStore& store, DeviceChannel& channel,
                 const DeviceCodec& codec, Clock& clock, Metrics& metrics)
    : options_(options),
      logic_(options_.policy, options_.command_ids ? options_.command_ids : random_command_ids()),
      store_(store),
      channel_(channel),
      codec_(codec),
      clock_(clock),
      stats_(std::make_unique<Stats>(metrics)),
      horizon_(std::numeric_limits<Millis>::min()),
      scanned_up_to_(std::numeric_limits<Millis>::min()) {
  options_.shards = std::max<size_t>(1, options_.shards);
  for (size_t i = 0; i < options_.shards; ++i) shards_.push_back(std::make_unique<Shard>(*this, i));
  metrics.gauge_fn("doppel_twins_hot", "Twins held in memory",
                   [this] { return static_cast<double>(hot_twins()); });
}

Runtime::~Runtime() {
  stop();
  alive_->store(false);
}

Status Runtime::start() {
  auto total = store_.count();
  if (!total) return total.status();
  stats_->total->set(static_cast<int64_t>(*total));
  auto commands = store_.command_counts();
  if (!commands) return commands.status();
  for (const auto& [status, n] : *commands) {
    auto st = parse_command_status(status);
    if (st && !is_terminal(*st))
      stats_->unfinished[static_cast<size_t>(*st)]->set(static_cast<int64_t>(n));
  }
  for (auto& s : shards_) s->start();
  running_.store(true);
  scan_deadlines();  // overdue alarms fire now, at start-up
  clock_.on_advance([this, alive = alive_] {
    if (!alive->load() || !running_.load()) return;
    scan_deadlines();
    for (auto& s : shards_) s->post(Tick{}, false);
  });
  scanner_ = std::thread([this] { scanner_loop(); });
  return Status::ok();
}

void Runtime::stop() {
  if (!running_.exchange(false)) return;
  {
    std::lock_guard lock(scanner_wait_mu_);
    scanner_cv_.notify_all();
  }
  if (scanner_.joinable()) scanner_.join();
  for (auto& s : shards_) s->stop();
}

void Runtime::scanner_loop() {
  while (running_.load()) {
    {
      std::unique_lock lock(scanner_wait_mu_);
      scanner_cv_.wait_for(lock, std::chrono::milliseconds(options_.scan_interval_ms),
                           [this] { return !running_.load(); });
    }
    if (running_.load()) scan_deadlines();
  }
}

void Runtime::scan_deadlines() {
  std::lock_guard lock(scan_mu_);
  const Millis up_to = clock_.now_ms() + options_.scan_horizon_ms;
  // Publish the horizon before reading: a write committed after this point sees it and posts
  // its own wake-up; one committed before is in the query. Nothing falls between.
  horizon_.store(std::max(horizon_.load(), up_to));
  Millis after_due = scanned_up_to_;
  std::string after_id = "\x7f";  // above every valid id: strictly after `after_due`
  while (true) {
    auto page = store_.due(after_due, after_id, up_to, kDueScanPage);
    if (!page) {
      log_warn("deadline scan failed, retrying: " + page.status().to_string());
      return;
    }
    for (auto& d : *page) {
      after_due = d.due;
      after_id = d.id;
      shards_[shard_of(d.id)]->post(WakeDue{std::move(d.id), d.due}, true);
    }
    if (page->size() < kDueScanPage) break;
  }
  scanned_up_to_ = std::max(scanned_up_to_, up_to);
}

void Runtime::deliver(DeviceInput input) {
  const size_t shard = shard_of(input.device_id);
  shards_[shard]->post(std::move(input), true);
}

std::future<ApiReply> Runtime::call(const std::string& id, ApiRequest request) {
  auto reply = std::make_shared<std::promise<ApiReply>>();
  auto future = reply->get_future();
  if (Status s = check_device_id(id, logic_.policy().limits); !s) {
    reply->set_value(ApiReply{s});
    return future;
  }
  shards_[shard_of(id)]->post(ApiCall{id, std::move(request), reply}, true);
  return future;
}

void Runtime::barrier() {
  std::vector<std::future<void>> waits;
  for (auto& s : shards_) {
    auto p = std::make_shared<std::promise<void>>();
    waits.push_back(p->get_future());
    s->post(Barrier{p}, false);
  }
  for (auto& w : waits) w.wait();
}

size_t Runtime::shard_of(std::string_view id) const { return fnv1a32(id) % shards_.size(); }

size_t Runtime::hot_twins() const {
  size_t n = 0;
  for (const auto& s : shards_) n += s->hot();
  return n;
}

}  // namespace doppel::twins
