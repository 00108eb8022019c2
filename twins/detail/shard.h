// Shard: one owner of a slice of the twins (DESIGN §2). It takes messages from its inbox one at
// a time — device input, operator requests, deadline wake-ups — runs them against the twins it
// holds (HotSet), keeps a timer heap for their near deadlines, and hands every change to its
// OutputGate. It runs either on a thread of its own (start()) or inline, driven by whoever calls
// run_pending() (the runtime's deterministic test mode).
//
// Thread-safety: post() and mark_failed() from any thread; everything else on the shard's own
// thread (or the thread driving it inline).
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_set>
#include <variant>
#include <vector>

#include "twins/clock.h"
#include "twins/deadline_scanner.h"
#include "twins/detail/inbox.h"
#include "twins/hot_set.h"
#include "twins/output_gate.h"
#include "twins/ownership.h"
#include "twins/partition.h"
#include "twins/request_handlers.h"
#include "twins/runtime_stats.h"
#include "twins/twin_logic.h"

namespace doppel::twins::detail {

struct ApiCall {
  std::string id;
  ApiRequest request;
  ReplyPromise reply;
  Cause cause;
};
// A deadline of twin `id` is due at `due` (from the scanner or a commit callback).
struct WakeDue {
  std::string id;
  Millis due = 0;
};
// The clock moved (FakeClock), or a failure was reported: re-check timers and failures.
struct Tick {};
struct Barrier {
  std::shared_ptr<std::promise<void>> done;
};
using ShardMessage = std::variant<DeviceInput, ApiCall, WakeDue, Tick, Barrier>;

// What a shard uses and does not own.
struct ShardDeps {
  const TwinLogic& logic;
  ShardStore& store;
  DeviceChannel& channel;
  const DeviceCodec& codec;
  const Clock& clock;
  RuntimeStats& stats;
  const DeadlineScanner& scanner;
  size_t inbox_capacity;
  size_t hot_cap;
  Millis hibernate_after_ms;
  bool auto_provision;
  const Ownership* ownership;  // null: every twin is this node's
};

class Shard final : private TwinHost {
 public:
  Shard(size_t index, const ShardDeps& deps);
  ~Shard() override;

  // Runs the shard on its own thread until stop().
  void start();
  // Processes what is queued, then stops the thread.
  void stop();
  // Inline mode: handles everything queued now, fires due timers and sweeps if due, on the
  // calling thread. Returns whether it did anything.
  bool run_pending();

  // `external` producers wait while the inbox is full (backpressure); the runtime's own do not.
  void post(ShardMessage m, bool external) { inbox_.push(std::move(m), external); }
  // A change of twin `id` failed to commit, or its handler threw: the shard drops the twin from
  // memory before it handles anything else, and it reloads its committed state when next used.
  void mark_failed(const std::string& id);
  size_t hot() const { return hot_.size(); }

 private:
  struct Timer {
    Millis due;
    std::string id;
    bool operator>(const Timer& o) const { return due > o.due; }
  };

  void run();
  void dispatch(ShardMessage& m);
  void handle(DeviceInput& in);
  void handle(ApiCall& call);
  void handle(WakeDue& w);
  void handle(Tick&) { fire_timers(); }
  void handle(Barrier& b) {
    fire_timers();  // what was due before the barrier has fired when it returns
    b.done->set_value();
  }
  // Drops the twins marked failed and tells the store to discard their queued writes.
  void drain_failures();
  bool failure_pending(const std::string& id);
  // Logs an exception thrown while handling `m`, fails its request, and drops its twin.
  void on_exception(ShardMessage& m, const char* what);
  void maybe_sweep();

  Result<HotTwin*> find_or_load(const std::string& id);
  // Whether this node serves the twin's partition now (always, outside a cluster).
  bool serves(const std::string& id) const {
    return deps_.ownership == nullptr || deps_.ownership->serves(partition_of(id));
  }
  void fire_timers();
  // Holds a timer for the twin's deadline if it falls within the scanner's horizon.
  bool schedule(HotTwin& h, std::optional<Millis> due);
  // Keeps a refused message on its twin (Twin::last_error), when the twin exists: at most once a
  // second per topic and code, so a device that repeats a bad message costs few writes.
  void keep_refusal(HotTwin* h, const DeviceInput& in, const Status& status);
  void send_error(const DeviceInput& in, Encoding enc, const Status& status,
                  const std::string& token);

  // TwinHost, for the request handlers.
  Millis now() const override { return deps_.clock.now_ms(); }
  HotTwin* adopt(Twin twin) override;
  void commit(HotTwin& h, Outcome& out, CommitCallback after) override;
  void remove(HotTwin& h, const Cause& cause, CommitCallback after) override;

  const size_t index_;
  ShardDeps deps_;
  Inbox<ShardMessage> inbox_;
  std::vector<std::chrono::steady_clock::time_point> batch_times_;  // run(): when each was posted
  HotSet hot_;
  OutputGate gate_;
  RequestHandlers handlers_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  Millis next_sweep_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::vector<ShardMessage> batch_;
  std::mutex failed_mu_;
  std::unordered_set<std::string> failed_;  // under failed_mu_
  std::atomic<bool> failures_pending_{false};
};

}  // namespace doppel::twins::detail
