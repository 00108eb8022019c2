#include "twins/requests.h"

#include <cmath>
#include <cstdlib>

namespace doppel::twins {
namespace {

Status bad(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

Status unknown_fields(const json& body, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (auto a : allowed) ok |= (key == a);
    if (!ok) {
      std::string list;
      for (auto a : allowed) {
        if (!list.empty()) list += ", ";
        list += a;
      }
      return bad("unknown field '" + key + "'; allowed fields are " + list);
    }
  }
  return Status::ok();
}

Result<double> positive_seconds(const json& v, std::string_view field) {
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()) ||
      v.get<double>() > 10.0 * 365 * 24 * 3600) {
    return bad(std::string(field) + " must be a positive number of seconds (at most 10 years)");
  }
  return v.get<double>();
}

}  // namespace

Result<TwinSettings> parse_twin_settings(const json& body, bool is_patch, const Limits& limits) {
  TwinSettings s;
  if (body.is_null()) return s;
  if (!body.is_object()) return bad("the body must be a JSON object");
  if (is_patch) {
    if (Status st = unknown_fields(body, {"tags", "stale_after_s", "command_strategy"}); !st)
      return st;
  } else {
    if (Status st = unknown_fields(body, {"desired", "tags", "stale_after_s", "command_strategy"});
        !st)
      return st;
  }
  if (auto it = body.find("desired"); it != body.end()) {
    if (Status st = check_state_document(*it, limits, "desired"); !st) return st;
    s.desired = *it;
  }
  if (auto it = body.find("tags"); it != body.end()) {
    s.tags.present = true;
    if (!it->is_null()) {
      if (Status st = check_state_document(*it, limits, "tags"); !st) return st;
      s.tags.value = *it;
    }
  }
  if (auto it = body.find("stale_after_s"); it != body.end()) {
    s.stale_after_s.present = true;
    if (!it->is_null()) {
      auto v = positive_seconds(*it, "stale_after_s");
      if (!v) return v.status();
      s.stale_after_s.value = *v;
    }
  }
  if (auto it = body.find("command_strategy"); it != body.end()) {
    auto strategy = it->is_string() ? parse_strategy(it->get<std::string>()) : std::nullopt;
    if (!strategy) return bad("command_strategy must be \"sequential\" or \"burst\"");
    s.command_strategy = strategy;
  }
  return s;
}

Result<CommandRequest> parse_command_request(const json& body, const Limits& limits) {
  if (!body.is_object()) return bad("the body must be a JSON object with at least \"name\"");
  if (Status st = unknown_fields(body, {"name", "args", "ttl_s", "idempotency_key"}); !st)
    return st;
  CommandRequest r;
  auto name = body.find("name");
  if (name == body.end() || !name->is_string() || name->get<std::string>().empty() ||
      name->get<std::string>().size() > 128) {
    return bad("\"name\" is required: a string of 1 to 128 characters");
  }
  r.name = name->get<std::string>();
  if (auto it = body.find("args"); it != body.end() && !it->is_null()) {
    if (Status st = check_state_document(*it, limits, "args"); !st) return st;
    r.args = *it;
  }
  if (auto it = body.find("ttl_s"); it != body.end() && !it->is_null()) {
    auto v = positive_seconds(*it, "ttl_s");
    if (!v) return v.status();
    r.ttl_s = *v;
  }
  if (auto it = body.find("idempotency_key"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>().size() > 128) {
      return bad("idempotency_key must be a string of 1 to 128 characters");
    }
    r.idempotency_key = it->get<std::string>();
  }
  return r;
}

Result<std::optional<uint64_t>> parse_if_match(std::string_view header) {
  std::string_view v = header;
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  if (v == "*") return std::optional<uint64_t>();
  if (v.substr(0, 2) == "W/") {
    // If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never matches.
    return Status(StatusCode::kPreconditionFailed,
                  "If-Match uses strong comparison and a weak entity tag (" + std::string(v) +
                      ") never matches; send the ETag as given, e.g. \"5\"");
  }
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty() || v.size() > 19) return bad("If-Match must be a version such as \"5\"");
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return bad("If-Match must be a version such as \"5\"");
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return std::optional<uint64_t>(n);
}

}  // namespace doppel::twins
