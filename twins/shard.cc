#include <algorithm>
#include <chrono>

#include "twins/detail/shard.h"
#include "twins/log.h"
#include "twins/partition.h"
#include "twins/thread_name.h"

namespace doppel::twins::detail {
namespace {

constexpr Millis kSweepIntervalMs = 1000;

}  // namespace

Shard::Shard(size_t index, const ShardDeps& deps)
    : index_(index),
      deps_(deps),
      inbox_(deps.inbox_capacity),
      hot_(deps.hot_cap, deps.hibernate_after_ms, *deps.stats.evictions),
      gate_(deps.store, deps.channel, deps.codec, deps.stats, deps.scanner,
            OutputGate::Hooks{[this](const std::string& id, Millis due) {
                                post(WakeDue{id, due}, false);
                              },
                              [this](const std::string& id) { mark_failed(id); },
                              [this](const std::string& id) { return failure_pending(id); }},
            deps.logic.policy().record_changes),
      handlers_(deps.logic, deps.stats, deps.auto_provision, *this),
      next_sweep_(deps.clock.now_ms() + kSweepIntervalMs) {}

Shard::~Shard() { stop(); }

void Shard::start() {
  thread_ = std::thread([this] {
    name_this_thread("shard-" + std::to_string(index_));
    run();
  });
}

void Shard::stop() {
  stopping_.store(true);
  inbox_.wake();
  if (thread_.joinable()) thread_.join();
  inbox_.close();
}

void Shard::run() {
  while (true) {
    const Millis t = now();
    Millis wait = std::min<Millis>(next_sweep_ - t, kSweepIntervalMs);
    if (!timers_.empty()) wait = std::min(wait, timers_.top().due - t);
    wait = std::max<Millis>(wait, 0);
    inbox_.pop_all(batch_, std::chrono::steady_clock::now() + std::chrono::milliseconds(wait),
                   &batch_times_);
    auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < batch_.size(); ++i) {
      if (i < batch_times_.size()) {
        deps_.stats.inbox_stage->observe(
            std::chrono::duration<double>(start - batch_times_[i]).count());
      }
      dispatch(batch_[i]);
      const auto end = std::chrono::steady_clock::now();
      deps_.stats.step_stage->observe(std::chrono::duration<double>(end - start).count());
      start = end;
    }
    batch_.clear();
    drain_failures();
    fire_timers();
    maybe_sweep();
    if (stopping_.load() && inbox_.size() == 0) break;
  }
}

bool Shard::run_pending() {
  bool did = false;
  while (inbox_.pop_all(batch_, std::chrono::steady_clock::now())) {
    did = true;
    for (auto& m : batch_) dispatch(m);
    batch_.clear();
  }
  drain_failures();
  const size_t timers_before = timers_.size();
  fire_timers();
  did |= timers_.size() != timers_before;
  maybe_sweep();
  return did;
}

void Shard::dispatch(ShardMessage& m) {
  drain_failures();
  try {
    std::visit([this](auto& msg) { handle(msg); }, m);
  } catch (const std::exception& e) {
    on_exception(m, e.what());
  } catch (...) {
    on_exception(m, "unknown exception");
  }
}

void Shard::maybe_sweep() {
  if (const Millis t = now(); t >= next_sweep_) {
    hot_.sweep(t, deps_.store.committed_seq());
    next_sweep_ = t + kSweepIntervalMs;
  }
}

Result<HotTwin*> Shard::find_or_load(const std::string& id) {
  if (HotTwin* h = hot_.find(id)) {
    // A cluster node's copy loaded under an epoch it has since lost (it gave the partition up
    // and took it back): another node may have changed the twin meanwhile. Read it again; what
    // this copy still has in flight is fenced. (A node on its own never changes its epochs.)
    if (deps_.ownership == nullptr || h->epoch == deps_.store.epoch(partition_of(id))) {
      return h->deleted ? nullptr : h;
    }
    hot_.evict(h);
    deps_.store.discard(id);
  }
  // The epoch before the state: if the partition changes owner in between, this copy's writes
  // are fenced rather than applied over the new owner's.
  const uint64_t epoch = deps_.store.epoch(partition_of(id));
  auto stored = deps_.store.load(id);
  if (!stored) return stored.status();
  if (!*stored) return nullptr;
  auto twin = from_record(**stored);
  if (!twin) {
    log_error(twin.status().to_string());
    return twin.status();
  }
  deps_.stats.wakes->inc();
  HotTwin* h = hot_.insert(std::move(*twin), now(), deps_.store.committed_seq());
  h->epoch = epoch;
  h->stored_deadline = (**stored).twin.next_deadline;
  return h;
}

HotTwin* Shard::adopt(Twin twin) {
  const uint64_t epoch = deps_.store.epoch(partition_of(twin.id));
  HotTwin* h = hot_.insert(std::move(twin), now(), deps_.store.committed_seq());
  h->epoch = epoch;
  return h;
}

bool Shard::schedule(HotTwin& h, std::optional<Millis> due) {
  if (!due) return false;
  if (h.scheduled && *h.scheduled <= *due) return true;  // that entry fires first, re-arms
  if (*due > deps_.scanner.horizon()) return false;      // the scanner will bring it
  timers_.push({*due, h.twin.id});
  h.scheduled = due;
  return true;
}

void Shard::commit(HotTwin& h, Outcome& out, CommitCallback after) {
  if (out.before && !h.twin.jobs.empty()) deps_.logic.settle_jobs(h.twin, out.at, out);
  const std::optional<Millis> deadline = deps_.logic.next_deadline(h.twin);
  const bool scheduled = schedule(h, deadline);
  gate_.commit(h, out, deadline, scheduled, std::move(after));
}

void Shard::remove(HotTwin& h, const Cause& cause, CommitCallback after) {
  gate_.remove(h, cause, now(), std::move(after));  // reads the twin's version for its event
  const std::string id = h.twin.id;
  h.deleted = true;
  h.twin = Twin();
  h.twin.id = id;
  h.scheduled.reset();
}

void Shard::fire_timers() {
  while (!timers_.empty()) {
    const Millis t = now();
    if (timers_.top().due > t) return;
    Timer timer = timers_.top();
    timers_.pop();
    if (!serves(timer.id)) continue;  // the partition's owner fires it now
    HotTwin* h = hot_.find(timer.id);
    if (h != nullptr) {
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
    try {
      Outcome out;
      out.begin(h->twin, t, Cause{CauseSource::kAlarm, {}, {}, {}, {}});
      deps_.logic.on_alarm(h->twin, t, out);
      RuntimeStats& stats = deps_.stats;
      for (Millis deadline : out.fired) {
        stats.alarms->inc();
        stats.lateness->observe(static_cast<double>(t - deadline) / 1000.0);
        stats.lateness_max_ms.raise_to(t - deadline);
        if (t < deadline) stats.early->inc();
      }
      commit(*h, out, nullptr);
      if (out.fired.empty() && !out.twin_changed) stats.rechecks->inc();
    } catch (const std::exception& e) {
      WakeDue wake{timer.id, timer.due};
      ShardMessage m = std::move(wake);
      on_exception(m, e.what());
    }
  }
}

void Shard::keep_refusal(HotTwin* h, const DeviceInput& in, const Status& status) {
  if (h == nullptr) return;
  const Millis t = now();
  const std::string code(code_name(status.code()));
  const auto& last = h->twin.last_error;
  if (last && last->topic == in.topic && last->code == code && t - last->at < 1000) return;
  h->twin.last_error = DeviceError{t, in.topic, code, status.message()};
  Outcome out;
  out.twin_changed = true;
  commit(*h, out, nullptr);
}

void Shard::send_error(const DeviceInput& in, Encoding enc, const Status& status,
                       const std::string& token) {
  RuntimeStats& stats = deps_.stats;
  const auto code = static_cast<size_t>(status.code());
  (stats.rejected[code] != nullptr ? stats.rejected[code] : stats.rejected_other)->inc();
  if (log_enabled(LogLevel::kDebug)) {
    log_debug("rejected message on " + in.topic + ": " + status.to_string());
  }
  Outbound msg;
  msg.device_id = in.device_id;
  msg.kind = OutboundKind::kError;
  msg.encoding = enc;
  msg.dialect = in.dialect;
  msg.op = in.kind == InboundKind::kGet      ? ShadowOp::kGet
           : in.kind == InboundKind::kDelete ? ShadowOp::kDelete
                                             : ShadowOp::kUpdate;
  if (in.dialect == Dialect::kAws) {
    // A Jobs request is refused on its own topic + /rejected.
    const size_t jobs = in.topic.find("/jobs/");
    if (jobs != std::string::npos) msg.jobs_topic = in.topic.substr(jobs + 6) + "/rejected";
  }
  msg.payload = deps_.codec.encode(
      ErrorOut{in.topic, std::string(code_name(status.code())), status.message(), token, now()},
      Wire(enc, in.dialect));
  deps_.channel.publish(std::move(msg));
}

void Shard::handle(DeviceInput& in) {
  if (!serves(in.device_id)) {  // lost since it was delivered: the owner has it too
    deps_.stats.foreign->inc();
    return;
  }
  deps_.stats.in[static_cast<size_t>(in.kind)]->inc();
  auto found = find_or_load(in.device_id);
  if (!found) {
    log_error("dropping message for '" + in.device_id + "': " + found.status().to_string());
    return;
  }
  HotTwin* h = *found;
  const TwinLogic& logic = deps_.logic;
  const Encoding enc = in.dialect == Dialect::kAws
                           ? Encoding::kJson
                           : in.content_encoding.value_or(h ? h->twin.encoding : Encoding::kJson);
  auto decoded =
      deps_.codec.decode(in.kind, in.payload, Wire(enc, in.dialect), logic.policy().limits);
  if (!decoded) {
    keep_refusal(h, in, decoded.status());
    send_error(in, enc, decoded.status(),
               deps_.codec.refused_token(in.payload, Wire(enc, in.dialect), logic.policy().limits));
    return;
  }
  DeviceMessage& msg = *decoded;
  if (h == nullptr) {
    // The broker's word on a client that is no twin (yet) creates none: its first message may.
    const auto* status = std::get_if<StatusMessage>(&msg);
    if (in.kind == InboundKind::kCommandResult || in.from_broker ||
        (status != nullptr && !status->online)) {
      deps_.stats.ignored->inc();
      return;
    }
  }
  const Millis t = now();
  Outcome out;
  Twin fresh;
  Twin& twin = h != nullptr ? h->twin : (fresh = logic.create(in.device_id, t, out));
  out.begin(twin, t, Cause{CauseSource::kDevice, {}, {}, {}, {}});
  // The dialect the device speaks is the one it last used (its replies go by it).
  const Dialect dialect_before = twin.dialect;
  if (!in.from_broker) twin.dialect = in.dialect;
  if (twin.dialect == Dialect::kAws) twin.encoding = Encoding::kJson;
  Status result;
  std::string token;
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, ReportedMessage>) {
          token = m.token;
          out.cause.token = m.token;
          result = logic.on_reported(twin, m, t, out);
        } else if constexpr (std::is_same_v<T, GetMessage>) {
          token = m.token;
          result = logic.on_get(twin, m, t, out);
        } else if constexpr (std::is_same_v<T, DeleteMessage>) {
          token = m.token;
          out.cause.token = m.token;
          result = logic.on_delete(twin, m, t, out);
        } else if constexpr (std::is_same_v<T, StatusMessage>) {
          if (in.from_broker && m.online) {
            logic.on_connected(twin, t, out);
          } else {
            logic.on_status(twin, m, enc, t, out);
          }
        } else if constexpr (std::is_same_v<T, JobsQueryMessage>) {
          token = m.token;
          result = logic.on_jobs_query(twin, in.command_id, m, t, out);
        } else if constexpr (std::is_same_v<T, JobUpdateMessage>) {
          token = m.token;
          result = logic.on_job_update(twin, in.command_id, m, t, out);
        } else {
          static_assert(std::is_same_v<T, CommandResultMessage>, "a device message kind");
          logic.on_command_result(twin, in.command_id, m, t, out);
        }
      },
      msg);
  if (!result) {
    twin.dialect = dialect_before;
    if (h != nullptr) keep_refusal(h, in, result);
    send_error(in, enc, result, token);
    return;  // nothing changed (a new twin is simply not kept)
  }
  if (twin.dialect != dialect_before) out.twin_changed = true;
  if (h == nullptr) h = adopt(std::move(fresh));
  hot_.touch(*h, t);
  commit(*h, out, nullptr);
}

void Shard::handle(ApiCall& call) {
  deps_.stats.api_calls->inc();
  if (!serves(call.id)) {
    (void)call.reply->send(ApiReply{
        Status(StatusCode::kNotOwner, "twin '" + call.id + "' belongs to partition " +
                                          std::to_string(partition_of(call.id)) +
                                          ", which this node does not serve now; retry (any node "
                                          "forwards it to the owner once the owner is known)")});
    return;
  }
  auto found = find_or_load(call.id);
  if (!found) {
    (void)call.reply->send(ApiReply{
        Status(StatusCode::kUnavailable,
               "twin '" + call.id + "' could not be loaded: " + found.status().message())});
    return;
  }
  HotTwin* h = *found;
  if (h != nullptr) hot_.touch(*h, now());
  handlers_.run(call.id, call.request, h, call.reply, call.cause);
}

void Shard::handle(WakeDue& w) {
  if (!serves(w.id)) return;
  if (HotTwin* h = hot_.find(w.id)) {
    if (h->deleted || (h->scheduled && *h->scheduled <= w.due)) return;
    h->scheduled = w.due;
  }
  timers_.push({w.due, w.id});
}

void Shard::mark_failed(const std::string& id) {
  {
    std::lock_guard lock(failed_mu_);
    failed_.insert(id);
    failures_pending_.store(true);
  }
  post(Tick{}, false);
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
    if (HotTwin* h = hot_.find(id)) hot_.evict(h);
    deps_.store.discard(id);  // writes made on the dropped copy fail instead of applying
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
  deps_.stats.internal_errors->inc();
  if (auto* call = std::get_if<ApiCall>(&m)) {
    try {
      call->reply->send(ApiReply{
          Status(StatusCode::kInternal, "internal error while handling twin '" + id +
                                            "'; nothing was applied; see the gateway log")});
    } catch (const std::future_error&) {
      // Already answered (the exception came after the reply).
    }
  }
  if (!id.empty()) mark_failed(id);
}

}  // namespace doppel::twins::detail
