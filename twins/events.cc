#include "twins/events.h"

#include <algorithm>

#include "twins/closed_set.h"

namespace doppel::twins {

namespace {

constexpr NameTable<CauseSource, 5> kSourceNames{{"api", "device", "alarm", "system", "job"}};
static_assert(kSourceNames.covers(CauseSource::kJob));

}  // namespace

std::string_view to_string(CauseSource s) { return kSourceNames.name(s); }

json cause_json(const Cause& cause) {
  json c = {{"source", to_string(cause.source)}};
  if (!cause.request_id.empty()) c["request_id"] = cause.request_id;
  if (!cause.principal.empty()) c["principal"] = cause.principal;
  if (!cause.token.empty()) c["token"] = cause.token;
  if (!cause.job.empty()) c["job"] = cause.job;
  return c;
}

StateMarks marks_of(const Twin& twin) {
  return {twin.connection, twin.liveness, twin.reconcile, twin.reconcile_attempts,
          twin.reconcile_desired_version};
}

void state_events(const StateMarks& before, const Twin& twin, std::vector<ChangeEvent>& out) {
  if (twin.connection != before.connection) {
    out.push_back(
        {"connection.changed",
         {{"state", to_string(twin.connection)}, {"previous", to_string(before.connection)}}});
  }
  if (twin.liveness != before.liveness) {
    out.push_back(
        {"liveness.changed",
         {{"state", to_string(twin.liveness)}, {"previous", to_string(before.liveness)}}});
  }
  // A new state, a re-send (more attempts), or another desired version: everything the twin
  // document shows of reconciliation, so that history can tell it as it was.
  if (twin.reconcile != before.reconcile || twin.reconcile_attempts != before.reconcile_attempts ||
      twin.reconcile_desired_version != before.reconcile_desired_version) {
    out.push_back({"reconcile.changed",
                   {{"state", to_string(twin.reconcile)},
                    {"previous", to_string(before.reconcile)},
                    {"attempts", twin.reconcile_attempts},
                    {"desired_version", twin.reconcile_desired_version}}});
  }
}

json changed_leaves(const json& target, const json& patch) {
  json out = json::object();
  if (!patch.is_object()) return out;
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    const auto found = target.is_object() ? target.find(it.key()) : target.end();
    const bool present = target.is_object() && found != target.end();
    if (it->is_null()) {
      if (present) out[it.key()] = nullptr;
    } else if (it->is_object()) {
      if (present && found->is_object()) {
        json sub = changed_leaves(*found, *it);
        if (!sub.empty()) out[it.key()] = std::move(sub);
      } else {
        // A new object, or one replacing a scalar: its leaves (nulls in it delete nothing).
        out[it.key()] = changed_leaves(json::object(), *it);
      }
    } else if (!present || !values_equal(*found, *it)) {
      out[it.key()] = *it;
    }
  }
  return out;
}

json event_json(const EventRecord& e) {
  json j = {{"seq", e.seq}, {"ts", e.ts}, {"twin", e.twin}, {"kind", e.kind}};
  if (e.twin.empty()) {
    j.erase("twin");  // job.changed: about a job, not a twin
  } else {
    j["version"] = e.version;
  }
  json body = json::parse(e.body, nullptr, false);
  if (body.is_object()) {
    for (auto it = body.begin(); it != body.end(); ++it) j[it.key()] = std::move(it.value());
  }
  return j;
}

bool EventFilter::matches_twin(std::string_view twin) const {
  return twins.empty() || std::find(twins.begin(), twins.end(), twin) != twins.end();
}

bool kind_matches(std::string_view kind, const std::vector<std::string>& filters) {
  if (filters.empty()) return true;
  for (const auto& f : filters) {
    if (f.size() >= 2 && f.compare(f.size() - 2, 2, ".*") == 0) {
      if (kind.substr(0, f.size() - 1) == std::string_view(f).substr(0, f.size() - 1)) return true;
    } else if (kind == f) {
      return true;
    }
  }
  return false;
}

}  // namespace doppel::twins
