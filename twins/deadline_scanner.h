// DeadlineScanner: how alarms of twins that are not in memory come due (DESIGN §7). Every twin's
// earliest deadline is an indexed column in the store; the scanner reads the index for deadlines
// up to `horizon` ahead and hands each to `sink` (the runtime posts it to the twin's shard).
// Deadlines beyond the horizon are left to later scans; a shard keeps timers only for deadlines
// within it. The first scan, at start-up, finds everything that fell due while the process was
// down.
//
// Thread-safety: scan() and horizon() from any thread (scans are serialised); start()/stop() from
// the owner. Without start() nothing scans by itself: the caller drives scan() (inline runtime).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "twins/clock.h"
#include "twins/ownership.h"
#include "twins/ports.h"

namespace doppel::twins {

class DeadlineScanner {
 public:
  using Sink = std::function<void(DueTwin due)>;
  // With `ownership` (a cluster node), only the partitions it serves are scanned, and a partition
  // it gains is scanned again from the beginning.
  DeadlineScanner(ShardStore& store, const Clock& clock, Millis horizon_ms, Millis interval_ms,
                  Sink sink, Ownership* ownership = nullptr);
  ~DeadlineScanner();
  DeadlineScanner(const DeadlineScanner&) = delete;
  DeadlineScanner& operator=(const DeadlineScanner&) = delete;

  // Scans every `interval_ms` on a thread of its own until stop().
  void start();
  void stop();
  // One scan now: every deadline in (last scanned, now + horizon_ms] goes to the sink.
  void scan();
  // Deadlines at or before this are either already handed out or will be found by the scan in
  // progress; a write that sets a deadline beyond what was scanned must wake its shard itself.
  Millis horizon() const { return horizon_.load(); }

 private:
  void loop();
  // Hands out the deadlines of `partitions` in (after, up_to]; false if the store failed.
  bool scan_range(const PartitionFilter& partitions, Millis after, Millis up_to);

  ShardStore& store_;
  const Clock& clock_;
  const Millis horizon_ms_;
  const Millis interval_ms_;
  Sink sink_;
  Ownership* const ownership_;
  std::atomic<Millis> horizon_;
  std::mutex scan_mu_;
  Millis scanned_up_to_;  // under scan_mu_
  std::thread thread_;
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  std::atomic<bool> running_{false};
};

}  // namespace doppel::twins
