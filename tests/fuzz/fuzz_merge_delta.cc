// libFuzzer: merge patch and delta on arbitrary JSON. Input is a JSON array
// [target, patch, reported]. Invariants: merge patch is idempotent, metadata mirrors the
// merged document, delta_is_empty agrees with compute_delta, and a delta never holds a key
// whose value reported already has.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "twins/document.h"
#include "twins/merge_patch.h"

using namespace doppel::twins;

namespace {

// Every non-object value of `doc` has a leaf in `meta`; `meta` has nothing `doc` lacks.
bool mirrors(const json& doc, const json& meta) {
  if (!doc.is_object()) return meta == json{{"ts", 1}};
  if (!meta.is_object() || meta.size() != doc.size()) return false;
  for (const auto& [k, v] : doc.items()) {
    auto it = meta.find(k);
    if (it == meta.end() || !mirrors(v, *it)) return false;
  }
  return true;
}

bool delta_consistent(const json& delta, const json& desired, const json& reported) {
  for (const auto& [k, v] : delta.items()) {
    if (!desired.contains(k)) return false;
    const json& want = desired[k];
    const json* have = reported.is_object() && reported.contains(k) ? &reported[k] : nullptr;
    if (v.is_object()) {
      if (!want.is_object() || v.empty()) return false;
      if (!delta_consistent(v, want, have != nullptr ? *have : json())) return false;
    } else if (have != nullptr && values_equal(v, *have)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto doc = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), 1 << 16, 12);
  if (!doc || !doc->is_array() || doc->size() != 3) return 0;
  json target = (*doc)[0];
  const json& patch = (*doc)[1];
  const json& reported = (*doc)[2];
  if (!target.is_object() || !patch.is_object()) return 0;

  json meta = json::object();
  json built = json::object();
  apply_merge_patch(built, meta, target, json{{"ts", 1}});  // the starting doc, with metadata
  apply_merge_patch(built, meta, patch, json{{"ts", 1}});
  json plain = json::object();
  apply_merge_patch(plain, target);
  apply_merge_patch(plain, patch);
  if (!values_equal(built, plain)) std::abort();
  if (!mirrors(built, meta)) std::abort();
  json twice = plain;
  if (apply_merge_patch(twice, patch)) std::abort();  // idempotent: nothing left to change
  if (!values_equal(twice, plain)) std::abort();

  const json delta = compute_delta(plain, reported);
  if (delta_is_empty(plain, reported) != delta.empty()) std::abort();
  if (!delta_consistent(delta, plain, reported)) std::abort();
  return 0;
}
