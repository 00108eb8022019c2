#include "twins/aws_shadow.h"

#include <algorithm>

#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

// A metadata leaf's time: desired leaves are {"ts": ms, "version": v}; reported leaves are ms or
// [ms, device ms] (twin.h).
Millis leaf_ms(const json& meta) {
  if (meta.is_number()) return meta.get<Millis>();
  if (meta.is_array() && !meta.empty() && meta[0].is_number()) return meta[0].get<Millis>();
  if (meta.is_object()) {
    auto ts = meta.find("ts");
    if (ts != meta.end() && ts->is_number()) return ts->get<Millis>();
  }
  return 0;
}

// `state` mirrored with {"timestamp": s} leaves taken from `meta`.
json aws_metadata(const json& state, const json& meta) {
  if (!state.is_object()) return {{"timestamp", aws_seconds(leaf_ms(meta))}};
  json out = json::object();
  for (const auto& [key, value] : state.items()) {
    static const json kNone;
    auto it = meta.is_object() ? meta.find(key) : meta.end();
    out[key] = aws_metadata(value, it != meta.end() ? *it : kNone);
  }
  return out;
}

// `text` as a JSON string literal.
void write_json_string(std::string& out, const std::string& text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    return c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20;
  });
  if (!plain) {
    out += to_text(json(text));
    return;
  }
  out += '"';
  out += text;
  out += '"';
}

// `section` mirrored with every leaf replaced by `stamp`, written as JSON text (what stamped()
// builds, without building it).
void write_stamped(std::string& out, const json& section, const std::string& stamp) {
  if (!section.is_object()) {
    out += stamp;
    return;
  }
  out += '{';
  bool first = true;
  for (const auto& [key, value] : section.items()) {
    if (!first) out += ',';
    first = false;
    write_json_string(out, key);
    out += ':';
    write_stamped(out, value, stamp);
  }
  out += '}';
}

void with_token(json& doc, const std::string& token) {
  if (!token.empty()) doc["clientToken"] = token;
}

}  // namespace

bool has_shadow(const Twin& twin) { return !twin.desired.empty() || !twin.reported.empty(); }

json shadow_get_accepted(const Twin& twin, Millis now, const std::string& token) {
  json state = json::object();
  json metadata = json::object();
  if (!twin.desired.empty()) {
    state["desired"] = twin.desired;
    metadata["desired"] = aws_metadata(twin.desired, twin.desired_meta);
  }
  if (!twin.reported.empty()) {
    state["reported"] = twin.reported;
    metadata["reported"] = aws_metadata(twin.reported, twin.reported_meta);
  }
  json delta = compute_delta(twin.desired, twin.reported);
  if (!delta.empty()) state["delta"] = std::move(delta);
  json doc = {{"state", std::move(state)},
              {"metadata", std::move(metadata)},
              {"version", twin.version},
              {"timestamp", aws_seconds(now)}};
  with_token(doc, token);
  return doc;
}

std::string shadow_update_accepted(const Twin& twin, const std::optional<json>& desired,
                                   const json& reported, Millis now, const std::string& token) {
  const int64_t s = aws_seconds(now);
  const std::string stamp = "{\"timestamp\":" + std::to_string(s) + "}";
  const bool with_reported = !reported.empty() || !desired;
  std::string out;
  out.reserve(128 + 3 * reported.size() * 24 + token.size());
  out += "{\"state\":{";
  if (desired) {
    out += "\"desired\":";
    out += to_text(*desired);
  }
  if (with_reported) {
    out += desired ? ",\"reported\":" : "\"reported\":";
    out += to_text(reported);
  }
  out += "},\"metadata\":{";
  if (desired) {
    out += "\"desired\":";
    write_stamped(out, *desired, stamp);
  }
  if (with_reported) {
    out += desired ? ",\"reported\":" : "\"reported\":";
    write_stamped(out, reported, stamp);
  }
  out += "},\"version\":";
  out += std::to_string(twin.version);
  out += ",\"timestamp\":";
  out += std::to_string(s);
  if (!token.empty()) {
    out += ",\"clientToken\":";
    write_json_string(out, token);
  }
  out += '}';
  return out;
}

json shadow_state(const Twin& twin) {
  return {{"state", {{"desired", twin.desired}, {"reported", twin.reported}}},
          {"metadata",
           {{"desired", aws_metadata(twin.desired, twin.desired_meta)},
            {"reported", aws_metadata(twin.reported, twin.reported_meta)}}},
          {"version", twin.version}};
}

json shadow_documents(json previous, const Twin& twin, Millis now, const std::string& token) {
  json doc = {{"previous", std::move(previous)},
              {"current", shadow_state(twin)},
              {"timestamp", aws_seconds(now)}};
  with_token(doc, token);
  return doc;
}

json shadow_delete_accepted(const Twin& twin, Millis now, const std::string& token) {
  json doc = {{"version", twin.version}, {"timestamp", aws_seconds(now)}};
  with_token(doc, token);
  return doc;
}

std::string_view aws_job_status(CommandStatus status) {
  switch (status) {
    case CommandStatus::kQueued:
      return "QUEUED";
    case CommandStatus::kSent:
      return "IN_PROGRESS";
    case CommandStatus::kSucceeded:
      return "SUCCEEDED";
    case CommandStatus::kFailed:
      return "FAILED";
    case CommandStatus::kRejected:
      return "REJECTED";
    case CommandStatus::kExpired:
    case CommandStatus::kTimedOut:
      return "TIMED_OUT";
    case CommandStatus::kCancelled:
      break;
  }
  return "CANCELED";
}

namespace {

Millis last_update(const Command& c) {
  return c.history.empty() ? c.created_at : c.history.back().at;
}

std::optional<Millis> started(const Command& c) {
  for (const auto& t : c.history) {
    if (t.status == CommandStatus::kSent) return t.at;
  }
  return std::nullopt;
}

}  // namespace

json job_summary(const Command& c) {
  json s = {{"jobId", c.id},
            {"queuedAt", aws_seconds(c.created_at)},
            {"lastUpdatedAt", aws_seconds(last_update(c))},
            {"versionNumber", c.history.size() + 1},
            {"executionNumber", 1}};
  if (auto at = started(c)) s["startedAt"] = aws_seconds(*at);
  return s;
}

json job_execution(const Twin& twin, const Command& c, bool with_document) {
  json e = job_summary(c);
  e["thingName"] = twin.id;
  e["status"] = aws_job_status(c.status);
  if (c.result.is_object()) e["statusDetails"] = c.result;
  if (with_document) e["jobDocument"] = {{"operation", c.name}, {"args", c.args}};
  return e;
}

json delta_metadata(const json& delta, const json& desired_meta) {
  return aws_metadata(delta, desired_meta);
}

}  // namespace doppel::twins
