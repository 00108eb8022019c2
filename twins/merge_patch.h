// JSON Merge Patch (RFC 7386) and the delta between desired and reported state (DESIGN §3).
// Pure functions over nlohmann::json; thread-safe.
#pragma once

#include "twins/document.h"

namespace doppel::twins {

// Applies `patch` to `target` as RFC 7386 says: objects merge recursively, null deletes a key,
// arrays and scalars replace. Returns true when `target`'s value changed (numbers compare by
// value, so 1 -> 1.0 is no change).
bool apply_merge_patch(json& target, const json& patch);

// The same, and keeps `meta` mirroring `target`: every non-object value of `target` that the
// patch sets gets `leaf` as its metadata (e.g. {"ts": 1764246000123}); deleted keys lose theirs.
bool apply_merge_patch(json& target, json& meta, const json& patch, const json& leaf);

// The desired leaves whose value differs from reported (missing counts as different),
// recursively; reported-only keys never appear; empty objects are omitted. Always an object.
json compute_delta(const json& desired, const json& reported);
// compute_delta(desired, reported).empty(), without building it.
bool delta_is_empty(const json& desired, const json& reported);

}  // namespace doppel::twins
