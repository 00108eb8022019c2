#include "twins/clock.h"

#include <chrono>
#include <cmath>

namespace doppel::twins {

Millis SystemClock::now_ms() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

Millis seconds_to_ms(double seconds) {
  if (!(seconds > 0)) return 0;
  return static_cast<Millis>(std::ceil(seconds * 1000.0 - 1e-9));
}

}  // namespace doppel::twins
