// Partitions: the unit in which twins are owned (DESIGN §1, "Ownership"). A twin belongs to
// partition fnv1a32(id) % kPartitions, fixed for the life of a fleet whatever the number of shard
// threads or nodes; a store keeps it as a column so that deadline scans and, later, a cluster's
// hand-overs can be asked for some partitions only.
//
// Every write carries its partition and the ownership epoch under which its twin was loaded. A
// store refuses a write whose epoch is no longer the partition's current one (kFenced): the
// writer lost the partition to another owner since it loaded the twin, so its copy may be stale.
// SQLite holds one lease that never changes (kFirstEpoch for every partition); a PostgreSQL
// store claims every partition at open with a new epoch, which fences a doppeld that was already
// writing to the same database.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "twins/fnv1a.h"

namespace doppel::twins {

// 1,024: the cluster's virtual shards (issue #22), enough to spread evenly over tens of nodes.
// (256 until schema migrations 6 on PostgreSQL and 9 on SQLite, which re-partitioned.)
inline constexpr uint32_t kPartitions = 1024;
inline constexpr uint64_t kFirstEpoch = 1;

constexpr uint32_t partition_of(std::string_view id) { return fnv1a32(id) % kPartitions; }

// Which partitions a scan covers: all of them (nullopt), or those listed.
using PartitionFilter = std::optional<std::vector<uint32_t>>;

}  // namespace doppel::twins
