// The twin runtime (DESIGN §2): S shards, each the only owner of its twins, reached only through
// its inbox. A twin lives on shard fnv1a32(id) % S. Every state change is handed to the
// ShardStore, and nothing it causes (MQTT publish, API reply) leaves before the store reports it
// committed: the output gate (OutputGate). Twins hibernate when idle or beyond the hot cap
// (HotSet) and wake on any message, request or alarm; deadlines of hibernated twins are found by
// the DeadlineScanner over the store's deadline index.
//
// Two ways to run: with threads (one per shard, plus the scanner: production), or inline
// (RuntimeOptions::inline_shards), where nothing runs by itself — deliver(), call(), barrier()
// and every FakeClock advance process all pending work on the calling thread before they
// return, so tests are deterministic and need neither sleeps nor barriers.
//
// Thread-safety (threaded mode): every public member may be called from any thread once start()
// returned. Inline mode: one thread drives the runtime at a time.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "twins/clock.h"
#include "twins/deadline_scanner.h"
#include "twins/device_io.h"
#include "twins/metrics.h"
#include "twins/ownership.h"
#include "twins/ports.h"
#include "twins/requests.h"
#include "twins/runtime_stats.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

namespace detail {
class Shard;
}

struct RuntimeOptions {
  size_t shards = 2;
  Policy policy;
  double hibernate_after_s = 60;
  size_t max_hot_twins = 1'000'000;
  size_t inbox_capacity = 20'000;  // per shard, for producers outside the runtime
  bool auto_provision = true;      // desired/commands on an unknown twin create it
  Millis scan_horizon_ms = 1000;   // deadlines this close are held in memory
  Millis scan_interval_ms = 250;
  IdGenerator command_ids;     // empty: random_command_ids()
  bool inline_shards = false;  // no threads: the caller's thread runs everything (tests)
  // A cluster node's partitions (twins/ownership.h); null: this node serves every twin. Must
  // outlive the runtime.
  Ownership* ownership = nullptr;
};

class Runtime {
 public:
  Runtime(RuntimeOptions options, ShardStore& store, DeviceChannel& channel,
          const DeviceCodec& codec, Clock& clock, Metrics& metrics);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Starts the shards and the deadline scanner, whose first scan finds every deadline that
  // passed while the process was down.
  Status start();
  // Processes what is queued, then stops the threads. Does not flush the store.
  void stop();

  // A message from a device. May wait while the shard's inbox is full (backpressure). A cluster
  // node drops a message for a partition it does not serve: every node receives every device
  // message, and the partition's owner applies it.
  void deliver(DeviceInput input);
  // An operator request against one twin. `done` runs once, after the change committed (on the
  // store's writer thread) or at once with an error that changed nothing (on the shard's or the
  // caller's thread); it must not block. Never waits for room in the shard's inbox.
  // `cause` is recorded on the change events the request causes.
  void call(const std::string& id, ApiRequest request, std::function<void(ApiReply)> done,
            Cause cause = Cause{CauseSource::kApi, {}, {}, {}, {}});
  // The same, as a future.
  std::future<ApiReply> call(const std::string& id, ApiRequest request);
  // Returns once every shard has processed everything posted before the call.
  void barrier();
  // Runs one scan of the deadline index now (the scanner thread does this periodically).
  void scan_deadlines();

  size_t shard_of(std::string_view id) const;
  size_t shard_count() const { return shards_.size(); }
  size_t hot_twins() const;
  const TwinLogic& logic() const { return logic_; }
  const RuntimeOptions& options() const { return options_; }

 private:
  // Inline mode: runs every shard until none has anything left to do.
  void run_inline();

  RuntimeOptions options_;
  TwinLogic logic_;
  ShardStore& store_;
  Clock& clock_;
  RuntimeStats stats_;
  DeadlineScanner scanner_;
  std::vector<std::unique_ptr<detail::Shard>> shards_;
  std::atomic<bool> running_{false};
  bool running_inline_ = false;  // inline mode: run_inline() is on the stack
  // Cleared on destruction, for the clock listener that may outlive us.
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace doppel::twins
