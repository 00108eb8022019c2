// The Clock port: where twins get the time. Times are Unix epoch milliseconds (UTC).
// SystemClock reads the wall clock; FakeClock is advanced by tests and tells its listeners, so a
// runtime driven by it re-checks its timers without any real sleeping.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace doppel::twins {

using Millis = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Millis now_ms() const = 0;
  // Registers a callback run (on the advancing thread) whenever the time jumps. Real clocks never
  // call it: their consumers wait in real time.
  virtual void on_advance(std::function<void()> callback) { (void)callback; }
  // Whether waiting in real time lets this clock's time pass (false for FakeClock).
  virtual bool is_real() const { return true; }
};

class SystemClock final : public Clock {
 public:
  Millis now_ms() const override;
};

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Millis start = 1'764'000'000'000) : now_(start) {}
  Millis now_ms() const override { return now_.load(); }
  void on_advance(std::function<void()> callback) override;
  bool is_real() const override { return false; }
  // Moves time forward by `ms` (or to `t`) and runs the listeners.
  void advance(Millis ms);
  void set(Millis t);

 private:
  std::atomic<Millis> now_;
  std::mutex mu_;
  std::vector<std::function<void()>> listeners_;
};

// Seconds (possibly fractional, as configured) to whole milliseconds, rounded up so that a
// deadline derived from it is never early.
Millis seconds_to_ms(double seconds);

}  // namespace doppel::twins
