// OutputGate: the commit-and-release step of a shard (DESIGN §2, "output gate"). It persists
// what a step changed of a twin and releases what the step caused — device publishes, then the
// caller's continuation (an API reply) — only once the store reports the change committed. A
// failed commit publishes nothing, hands the error to the continuation and reports the twin as
// failed, so its shard drops the in-memory copy (see ShardStore's poisoning rule in ports.h).
//
// Thread-safety: commit() and remove() on the owning shard's thread; the release runs on the
// store's writer thread and touches only the channel, the hooks and the continuation.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "twins/deadline_scanner.h"
#include "twins/hot_set.h"
#include "twins/ports.h"
#include "twins/runtime_stats.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

class OutputGate {
 public:
  struct Hooks {
    // Writer thread: a committed deadline no shard timer holds and the scanner may have passed.
    std::function<void(const std::string& id, Millis due)> wake;
    // Writer thread: a write of the twin failed; its shard must drop it before anything else.
    std::function<void(const std::string& id)> failed;
    // Shard thread: a failure of the twin was reported and the shard has not handled it yet.
    std::function<bool(const std::string& id)> failure_pending;
  };

  // `history`: record change events with each write (events.h).
  OutputGate(ShardStore& store, DeviceChannel& channel, const DeviceCodec& codec,
             RuntimeStats& stats, const DeadlineScanner& scanner, Hooks hooks, bool history);

  // Counts what `out` records, writes what it changed of `h` with `deadline` as the twin's next
  // deadline (`scheduled`: the shard holds a timer for it), and once that is committed publishes
  // `out`'s device outputs and runs `after`. A step that changed nothing still waits for the
  // twin's earlier writes before releasing (a read never answers uncommitted state).
  void commit(HotTwin& h, Outcome& out, std::optional<Millis> deadline, bool scheduled,
              CommitCallback after);
  // Writes the deletion of `h`'s twin (`cause`: for its twin.deleted event); `after` runs once it
  // is committed.
  void remove(HotTwin& h, const Cause& cause, Millis now, CommitCallback after);

 private:
  void count(const Twin& twin, const Outcome& out);
  // The step's change events, ready to store.
  std::vector<EventRecord> events_of(const Twin& twin, Outcome& out) const;

  ShardStore& store_;
  DeviceChannel& channel_;
  const DeviceCodec& codec_;
  RuntimeStats& stats_;
  const DeadlineScanner& scanner_;
  Hooks hooks_;
  bool history_;
};

}  // namespace doppel::twins
