// The batch plan of a group commit, backend-neutral (a pure function of the batch): only the last
// row written for a twin in a batch needs to reach the table, and its indexed state columns are
// rewritten when any write of the batch may have changed them. Every store's writer plans its
// batch with it.
#pragma once

#include <cstddef>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "storage/group_commit.h"

namespace doppel::storage {

class BatchPlan {
 public:
  // Plans `batch` (its ops and statuses; writes already failed are left out). The plan refers to
  // the batch's ids: it is valid while the batch is.
  void make(const GroupCommitter::Batch& batch);
  // Whether op `i`, a write of twin `id`, carries the row that reaches the table (or the delete).
  bool carries_row(size_t i, std::string_view id) const {
    auto it = last_row_.find(id);
    return it != last_row_.end() && it->second == i;
  }
  bool states_changed(std::string_view id) const { return states_changed_.count(id) != 0; }

 private:
  std::unordered_map<std::string_view, size_t> last_row_;
  std::unordered_set<std::string_view> states_changed_;
};

inline void BatchPlan::make(const GroupCommitter::Batch& batch) {
  last_row_.clear();
  states_changed_.clear();
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    const twins::TwinWrite* tw = batch.ops[i].twin();
    if (tw == nullptr || !batch.statuses[i]) continue;
    if (tw->twin || tw->delete_twin) last_row_[tw->id] = i;
    if (tw->twin && tw->twin->states_changed) states_changed_.insert(tw->id);
  }
}

}  // namespace doppel::storage
