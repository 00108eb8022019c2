// A DeviceChannel that records what the runtime publishes. Thread-safe.
#pragma once

#include <mutex>
#include <vector>

#include "twins/ports.h"

namespace doppel::testing {

class FakeChannel final : public twins::DeviceChannel {
 public:
  void publish(twins::Outbound message) override {
    std::lock_guard lock(mu_);
    sent_.push_back(std::move(message));
  }
  std::vector<twins::Outbound> sent() const {
    std::lock_guard lock(mu_);
    return sent_;
  }
  std::vector<twins::Outbound> sent(twins::OutboundKind kind, const std::string& id = {}) const {
    std::lock_guard lock(mu_);
    std::vector<twins::Outbound> out;
    for (const auto& m : sent_) {
      if (m.kind == kind && (id.empty() || m.device_id == id)) out.push_back(m);
    }
    return out;
  }
  void clear() {
    std::lock_guard lock(mu_);
    sent_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<twins::Outbound> sent_;
};

}  // namespace doppel::testing
