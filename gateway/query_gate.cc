#include "gateway/query_gate.h"

namespace doppel::gateway {

std::shared_ptr<void> QueryGate::admit(const std::string& client) {
  {
    std::lock_guard lock(mu_);
    size_t& n = running_[client];
    if (n >= per_client_) {
      if (n == 0) running_.erase(client);
      return nullptr;
    }
    ++n;
  }
  // The ticket's deleter gives the place back (the gate outlives every request).
  return std::shared_ptr<void>(this, [client](QueryGate* gate) {
    std::lock_guard lock(gate->mu_);
    if (auto it = gate->running_.find(client); it != gate->running_.end() && --it->second == 0) {
      gate->running_.erase(it);
    }
  });
}

}  // namespace doppel::gateway
