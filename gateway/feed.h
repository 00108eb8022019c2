// FeedHub: wakes the change feed's stream subscribers when the store commits new events
// (TwinStore::on_events). A subscriber that has read everything parks here; a commit wakes every
// parked subscriber once, and each then reads what it is missing from the store at its own pace.
// Memory per subscriber does not depend on how far behind it is.
//
// Thread-safety: all methods from any thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace doppel::gateway {

class FeedHub {
 public:
  // `wake` runs once, on the store's writer thread, at the next commit with events (it must not
  // block: post the read elsewhere). Held weakly: a subscriber that goes away is forgotten.
  void park(std::weak_ptr<std::function<void()>> wake) {
    std::lock_guard lock(mu_);
    parked_.push_back(std::move(wake));
  }
  void notify() {
    std::vector<std::weak_ptr<std::function<void()>>> woken;
    {
      std::lock_guard lock(mu_);
      woken.swap(parked_);
    }
    for (auto& w : woken) {
      if (auto f = w.lock()) (*f)();
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::weak_ptr<std::function<void()>>> parked_;
};

}  // namespace doppel::gateway
