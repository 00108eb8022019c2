// The Clock port: where twins get the time. Times are Unix epoch milliseconds (UTC).
// SystemClock reads the wall clock; tests use FakeClock (tests/support/fake_clock.h), which moves
// only when told and tells its listeners, so a runtime driven by it re-checks its timers without
// any real sleeping.
#pragma once

#include <cstdint>
#include <functional>

namespace doppel::twins {

using Millis = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Millis now_ms() const = 0;
  // Registers a callback run (on the advancing thread) whenever the time jumps. Real clocks never
  // call it: their consumers wait in real time.
  virtual void on_advance(std::function<void()> callback) { (void)callback; }
};

class SystemClock final : public Clock {
 public:
  Millis now_ms() const override;
};

// Seconds (possibly fractional, as configured) to whole milliseconds, rounded up so that a
// deadline derived from it is never early.
Millis seconds_to_ms(double seconds);

}  // namespace doppel::twins
