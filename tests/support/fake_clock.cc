#include "tests/support/fake_clock.h"

namespace doppel::testing {

void FakeClock::on_advance(std::function<void()> callback) {
  std::lock_guard lock(mu_);
  listeners_.push_back(std::move(callback));
}

void FakeClock::advance(twins::Millis ms) { set(now_.load() + ms); }

void FakeClock::set(twins::Millis t) {
  now_.store(t);
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(mu_);
    listeners = listeners_;
  }
  for (auto& listener : listeners) listener();
}

}  // namespace doppel::testing
