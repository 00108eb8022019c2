// Ownership: which partitions (twins/partition.h) this node serves at this moment. A node of a
// cluster (issue #22) serves only the partitions whose leases it holds (twins/leases.h): it applies
// device messages, answers requests and fires alarms for their twins, and leaves every other
// twin to its owner. A node on its own serves them all and needs none (RuntimeOptions::ownership
// empty).
//
// Thread-safety: implementations are called from every shard thread and the deadline scanner.
#pragma once

#include <cstdint>
#include <vector>

namespace doppel::twins {

class Ownership {
 public:
  virtual ~Ownership() = default;
  // Whether this node may serve `partition` now (by its own monotonic clock).
  virtual bool serves(uint32_t partition) const = 0;
  // Every partition it may serve now, in order.
  virtual std::vector<uint32_t> serving() const = 0;
  // Partitions gained since the last call (their deadlines that already passed must be scanned
  // again from the beginning: the scanner had skipped them while another node owned them).
  virtual std::vector<uint32_t> take_gained() = 0;
};

}  // namespace doppel::twins
