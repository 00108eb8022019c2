// FNV-1a 32-bit: the fixed, documented hash that places a twin on a shard (fnv1a32(id) % shards).
// It must never change: the same function later partitions twins across machines.
#pragma once

#include <cstdint>
#include <string_view>

namespace doppel::twins {

constexpr uint32_t fnv1a32(std::string_view data) {
  uint32_t hash = 2166136261u;
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 16777619u;
  }
  return hash;
}

static_assert(fnv1a32("") == 0x811c9dc5u);
static_assert(fnv1a32("a") == 0xe40c292cu);
static_assert(fnv1a32("foobar") == 0xbf9cf968u);

}  // namespace doppel::twins
