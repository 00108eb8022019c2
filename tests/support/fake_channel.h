// A DeviceChannel that records what the runtime publishes (thread-safe), and device messages as
// the MQTT adapter hands them to the runtime.
#pragma once

#include <mutex>
#include <string>
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

// A device message as the MQTT adapter would deliver it.
inline twins::DeviceInput device_input(const std::string& id, twins::InboundKind kind,
                                       const std::string& payload,
                                       const std::string& command_id = {}) {
  twins::DeviceInput in;
  in.device_id = id;
  in.kind = kind;
  in.command_id = command_id;
  in.topic = "twins/" + id + "/" + std::string(to_string(kind));
  in.payload = payload;
  return in;
}

}  // namespace doppel::testing
