#include "twins/clock.h"

#include <chrono>
#include <cmath>

namespace doppel::twins {

Millis SystemClock::now_ms() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void FakeClock::on_advance(std::function<void()> callback) {
  std::lock_guard lock(mu_);
  listeners_.push_back(std::move(callback));
}

void FakeClock::advance(Millis ms) { set(now_.load() + ms); }

void FakeClock::set(Millis t) {
  now_.store(t);
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(mu_);
    listeners = listeners_;
  }
  for (auto& listener : listeners) listener();
}

Millis seconds_to_ms(double seconds) {
  if (!(seconds > 0)) return 0;
  return static_cast<Millis>(std::ceil(seconds * 1000.0 - 1e-9));
}

}  // namespace doppel::twins
