#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

bool merge_value(json& target, json* meta, const json& patch, const json* leaf) {
  if (!patch.is_object()) {
    bool changed = false;
    if (!values_equal(target, patch)) {
      target = patch;
      changed = true;
    }
    if (meta != nullptr) *meta = *leaf;
    return changed;
  }
  bool changed = false;
  if (!target.is_object()) {
    target = json::object();
    changed = true;
    if (meta != nullptr) *meta = json::object();
  } else if (meta != nullptr && !meta->is_object()) {
    *meta = json::object();
  }
  for (const auto& [key, value] : patch.items()) {
    if (value.is_null()) {
      if (target.erase(key) > 0) changed = true;
      if (meta != nullptr) meta->erase(key);
      continue;
    }
    auto it = target.find(key);
    if (it == target.end()) {
      it = target.emplace(key, json()).first;
      changed = true;
    }
    json* child_meta = nullptr;
    if (meta != nullptr) {
      if (!it->is_object() && value.is_object()) (*meta)[key] = json::object();
      child_meta = &(*meta)[key];
    }
    changed |= merge_value(*it, child_meta, value, leaf);
  }
  return changed;
}

// reported[key], or nullptr when reported is absent or lacks it.
const json* child(const json* reported, const std::string& key) {
  if (reported == nullptr) return nullptr;
  auto it = reported->find(key);
  return it != reported->end() ? &*it : nullptr;
}

void delta_into(const json& desired, const json* reported, json& out) {
  for (const auto& [key, want] : desired.items()) {
    const json* have = child(reported, key);
    if (want.is_object()) {
      json sub = json::object();
      delta_into(want, have != nullptr && have->is_object() ? have : nullptr, sub);
      if (!sub.empty()) out[key] = std::move(sub);
    } else if (have == nullptr || !values_equal(want, *have)) {
      out[key] = want;
    }
  }
}

bool no_delta(const json& desired, const json* reported) {
  for (const auto& [key, want] : desired.items()) {
    const json* have = child(reported, key);
    if (want.is_object()) {
      if (!no_delta(want, have != nullptr && have->is_object() ? have : nullptr)) return false;
    } else if (have == nullptr || !values_equal(want, *have)) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool delta_is_empty(const json& desired, const json& reported) {
  return !desired.is_object() || no_delta(desired, reported.is_object() ? &reported : nullptr);
}

bool apply_merge_patch(json& target, const json& patch) {
  return merge_value(target, nullptr, patch, nullptr);
}

bool apply_merge_patch(json& target, json& meta, const json& patch, const json& leaf) {
  return merge_value(target, &meta, patch, &leaf);
}

json compute_delta(const json& desired, const json& reported) {
  json out = json::object();
  if (desired.is_object()) delta_into(desired, reported.is_object() ? &reported : nullptr, out);
  return out;
}

}  // namespace doppel::twins
