#include "mqtt/detail/struct_json.h"

#include <cmath>

namespace doppel::mqtt::detail {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;
using twins::json;

Status value_to_json(const Value& v, json& out);

Status struct_to_json(const Struct& s, json& out) {
  out = json::object();
  for (const auto& [key, value] : s.fields()) {
    if (Status st = value_to_json(value, out[key]); !st) return st;
  }
  return Status::ok();
}

Status value_to_json(const Value& v, json& out) {
  switch (v.kind_case()) {
    case Value::kNullValue:
    case Value::KIND_NOT_SET:
      out = nullptr;
      return Status::ok();
    case Value::kBoolValue:
      out = v.bool_value();
      return Status::ok();
    case Value::kStringValue:
      out = v.string_value();
      return Status::ok();
    case Value::kNumberValue: {
      const double d = v.number_value();
      if (!std::isfinite(d)) {
        return Status(StatusCode::kInvalidArgument, "a number is NaN or infinite");
      }
      constexpr double kExact = 9007199254740992.0;  // 2^53
      if (std::trunc(d) == d && std::fabs(d) <= kExact) {
        out = static_cast<int64_t>(d);
      } else {
        out = d;
      }
      return Status::ok();
    }
    case Value::kStructValue:
      return struct_to_json(v.struct_value(), out);
    case Value::kListValue: {
      out = json::array();
      for (const auto& item : v.list_value().values()) {
        json element;
        if (Status st = value_to_json(item, element); !st) return st;
        out.push_back(std::move(element));
      }
      return Status::ok();
    }
  }
  out = nullptr;
  return Status::ok();
}

void json_to_value(const json& j, Value& out) {
  switch (j.type()) {
    case json::value_t::null:
      out.set_null_value(google::protobuf::NULL_VALUE);
      break;
    case json::value_t::boolean:
      out.set_bool_value(j.get<bool>());
      break;
    case json::value_t::string:
      out.set_string_value(j.get<std::string>());
      break;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      out.set_number_value(j.get<double>());
      break;
    case json::value_t::object:
      to_struct(j, *out.mutable_struct_value());
      break;
    case json::value_t::array: {
      ListValue* list = out.mutable_list_value();
      for (const auto& item : j) json_to_value(item, *list->add_values());
      break;
    }
    default:
      out.set_null_value(google::protobuf::NULL_VALUE);
      break;
  }
}

}  // namespace

Result<json> to_json(const Struct& value) {
  json out;
  if (Status st = struct_to_json(value, out); !st) return st;
  return out;
}

void to_struct(const json& value, Struct& out) {
  out.Clear();
  if (!value.is_object()) return;
  auto* fields = out.mutable_fields();
  for (const auto& [key, item] : value.items()) json_to_value(item, (*fields)[key]);
}

}  // namespace doppel::mqtt::detail
