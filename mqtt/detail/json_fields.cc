#include "mqtt/detail/json_fields.h"

namespace doppel::mqtt::detail {

using twins::json;
using twins::Limits;

Status malformed(const std::string& m) { return Status(StatusCode::kMalformed, m); }
Status invalid(const std::string& m) { return Status(StatusCode::kInvalidArgument, m); }

Status only_fields(const json& obj, std::initializer_list<std::string_view> allowed,
                   std::string_view what) {
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (auto a : allowed) ok |= key == a;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return invalid("unknown field '" + key.substr(0, 64) + "' in " + std::string(what) +
                     "; allowed: " + list);
    }
  }
  return Status::ok();
}

Status optional_string(const json& obj, const char* field, size_t max, std::string& out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::ok();
  if (!it->is_string()) {
    return invalid(std::string("'") + field + "' must be a string, not " + it->type_name());
  }
  if (it->get_ref<const std::string&>().size() > max) {
    return invalid(std::string("'") + field + "' is longer than " + std::to_string(max) + " bytes");
  }
  out = it->get<std::string>();
  return Status::ok();
}

Result<json> parse_envelope(std::string_view payload, const Limits& limits, bool empty_ok) {
  if (payload.empty()) {
    if (empty_ok) return json::object();
    return malformed("empty payload; expected a JSON object");
  }
  auto doc = twins::parse_json(payload, limits.max_payload_bytes(), limits.max_depth + 1);
  if (!doc && doc.status().code() == StatusCode::kTooDeep) {
    return Status(StatusCode::kTooDeep,
                  "the message nests too deeply: state documents may nest "
                  "at most " +
                      std::to_string(limits.max_depth) + " levels");
  }
  if (!doc) return doc;
  if (!doc->is_object()) {
    return malformed(std::string("the message must be a JSON object, not ") + doc->type_name());
  }
  return doc;
}

}  // namespace doppel::mqtt::detail
