// FakeClock: a Clock that moves only when a test says so, and then runs the listeners the runtime
// registered (scan deadlines, fire timers) on the advancing thread — Seastar's manual_clock,
// abseil's SimulatedClock. Test-only. Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

#include "twins/clock.h"

namespace doppel::testing {

class FakeClock final : public twins::Clock {
 public:
  explicit FakeClock(twins::Millis start = 1'764'000'000'000) : now_(start) {}
  twins::Millis now_ms() const override { return now_.load(); }
  void on_advance(std::function<void()> callback) override;
  // Moves time forward by `ms` (or to `t`) and runs the listeners before returning.
  void advance(twins::Millis ms);
  void set(twins::Millis t);

 private:
  std::atomic<twins::Millis> now_;
  std::mutex mu_;
  std::vector<std::function<void()>> listeners_;
};

}  // namespace doppel::testing
