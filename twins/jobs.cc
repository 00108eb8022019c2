#include "twins/jobs.h"

#include <array>
#include <cmath>

#include "twins/closed_set.h"
#include "twins/merge_patch.h"

namespace doppel::twins {
namespace {

constexpr NameTable<JobStatus, 4> kJobStatus{{"running", "completed", "cancelled", "aborted"}};
static_assert(kJobStatus.covers(JobStatus::kAborted));
constexpr NameTable<ExecStatus, 6> kExecStatus{
    {"pending", "in_progress", "succeeded", "failed", "timed_out", "cancelled"}};
static_assert(kExecStatus.covers(ExecStatus::kCancelled));
// Twins a job may name directly; larger sets are what queries are for.
constexpr size_t kMaxListedTwins = 10'000;

Status bad(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

Status only_fields(const json& body, std::string_view what,
                   std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (auto a : allowed) ok |= key == a;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return bad("unknown field '" + key + "' in " + std::string(what) + "; allowed: " + list);
    }
  }
  return Status::ok();
}

Result<double> number_in(const json& body, const char* key, double fallback, double lo, double hi,
                         std::string_view what) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < lo ||
      it->get<double>() > hi) {
    return bad(std::string(key) + " must be " + std::string(what));
  }
  return it->get<double>();
}

}  // namespace

std::string_view to_string(JobStatus s) { return kJobStatus.name(s); }
std::string_view to_string(ExecStatus s) { return kExecStatus.name(s); }
std::optional<JobStatus> parse_job_status(std::string_view s) { return kJobStatus.parse(s); }
std::optional<ExecStatus> parse_exec_status(std::string_view s) { return kExecStatus.parse(s); }

bool valid_job_id(std::string_view id) { return valid_command_id(id); }

uint64_t& JobCounts::of(ExecStatus s) {
  switch (s) {
    case ExecStatus::kPending:
      return pending;
    case ExecStatus::kInProgress:
      return in_progress;
    case ExecStatus::kSucceeded:
      return succeeded;
    case ExecStatus::kFailed:
      return failed;
    case ExecStatus::kTimedOut:
      return timed_out;
    case ExecStatus::kCancelled:
      break;
  }
  return cancelled;
}

size_t max_job_spec_bytes(const Limits& limits) {
  return limits.max_payload_bytes() + kMaxListedTwins * (limits.max_id_bytes + 3);
}

Result<JobSpec> parse_job_spec(const json& body, const Limits& limits) {
  if (!body.is_object())
    return bad("the body must be a JSON object with \"target\" and \"action\"");
  if (Status s = only_fields(
          body, "the job",
          {"id", "target", "action", "mode", "rate_per_s", "timeout_s", "retries", "abort"});
      !s) {
    return s;
  }
  JobSpec spec;
  if (auto it = body.find("id"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || !valid_job_id(it->get<std::string>())) {
      return bad("id must be 1 to 64 characters of A-Z a-z 0-9 . _ : -");
    }
    spec.id = it->get<std::string>();
  }

  const auto target = body.find("target");
  if (target == body.end() || !target->is_object() || target->size() != 1) {
    return bad("target must be {\"query\": \"<expression>\"} or {\"twins\": [\"id\", ...]}");
  }
  if (auto q = target->find("query"); q != target->end()) {
    if (!q->is_string()) return bad("target.query must be a string");
    auto where = parse_query(q->get<std::string>());
    if (!where) return Status(where.status().code(), "target.query: " + where.status().message());
    spec.query_text = q->get<std::string>();
    spec.where = std::shared_ptr<const QueryExpr>(std::move(*where));
  } else if (auto t = target->find("twins"); t != target->end()) {
    if (!t->is_array() || t->empty() || t->size() > kMaxListedTwins) {
      return bad("target.twins must be an array of 1 to " + std::to_string(kMaxListedTwins) +
                 " twin ids (use a query for more)");
    }
    for (const auto& id : *t) {
      if (!id.is_string() || !valid_device_id(id.get<std::string>(), limits)) {
        return bad("target.twins: " + id.dump() + " is not a valid twin id");
      }
      spec.twins.push_back(id.get<std::string>());
    }
  } else {
    return bad("target must be {\"query\": \"<expression>\"} or {\"twins\": [\"id\", ...]}");
  }

  const auto action = body.find("action");
  if (action == body.end() || !action->is_object() || action->size() != 1) {
    return bad("action must be {\"desired\": <merge patch>} or {\"command\": {\"name\", ...}}");
  }
  if (auto d = action->find("desired"); d != action->end()) {
    if (!d->is_object()) return bad("action.desired must be a JSON object (a merge patch)");
    if (Status s = check_state_document(*d, limits, "action.desired", false); !s) return s;
    // What the patch sets (its non-null leaves) is part of every twin's desired document after
    // it: if that alone is over the limit, every execution would fail.
    json sets = json::object();
    apply_merge_patch(sets, *d);
    if (const size_t bytes = to_text(sets).size(); bytes > limits.max_document_bytes) {
      return Status(StatusCode::kTooLarge,
                    "action.desired sets " + std::to_string(bytes) +
                        " bytes of desired state (serialized), more than a twin's whole desired "
                        "document may hold (--max-document-bytes " +
                        std::to_string(limits.max_document_bytes) +
                        "): every execution would fail");
    }
    spec.desired = *d;
  } else if (auto c = action->find("command"); c != action->end()) {
    if (c->is_object() && c->contains("idempotency_key")) {
      return bad("action.command takes no idempotency_key: the job derives one per attempt");
    }
    auto cmd = parse_command_request(*c, limits);
    if (!cmd) return Status(cmd.status().code(), "action.command: " + cmd.status().message());
    spec.command = std::move(*cmd);
  } else {
    return bad("action must be {\"desired\": <merge patch>} or {\"command\": {\"name\", ...}}");
  }

  if (auto m = body.find("mode"); m != body.end() && !m->is_null()) {
    if (*m == "continuous") {
      spec.continuous = true;
    } else if (*m != "snapshot") {
      return bad("mode must be \"snapshot\" or \"continuous\"");
    }
  }
  if (spec.continuous && !spec.where) {
    return bad("mode \"continuous\" needs a query target: a list of twins cannot gain members");
  }
  auto rate = number_in(body, "rate_per_s", 100, 0.001, 1e6, "a number from 0.001 to 1000000");
  if (!rate) return rate.status();
  spec.rate_per_s = *rate;
  auto timeout = number_in(body, "timeout_s", 3600, 0.001, 10.0 * 365 * 24 * 3600,
                           "a positive number of seconds (at most 10 years)");
  if (!timeout) return timeout.status();
  spec.timeout_s = *timeout;
  auto retries = number_in(body, "retries", 0, 0, 100, "an integer from 0 to 100");
  if (!retries) return retries.status();
  if (*retries != std::floor(*retries)) return bad("retries must be an integer from 0 to 100");
  if (*retries > 0 && !spec.command) return bad("retries apply to command jobs only");
  spec.retries = static_cast<uint32_t>(*retries);
  if (auto a = body.find("abort"); a != body.end() && !a->is_null()) {
    if (!a->is_object()) return bad("abort must be {\"failed_pct\": 10, \"min_done\": 20}");
    if (Status s = only_fields(*a, "abort", {"failed_pct", "min_done"}); !s) return s;
    auto pct = number_in(*a, "failed_pct", 10, 0, 100, "a percentage from 0 to 100");
    if (!pct) return pct.status();
    auto min_done = number_in(*a, "min_done", 20, 1, 1e12, "a positive integer");
    if (!min_done) return min_done.status();
    if (*min_done != std::floor(*min_done)) return bad("min_done must be a positive integer");
    spec.abort_failed_pct = *pct;
    spec.abort_min_done = static_cast<uint64_t>(*min_done);
  }
  return spec;
}

json job_spec_json(const JobSpec& spec) {
  json target = spec.where ? json{{"query", spec.query_text}} : json{{"twins", spec.twins}};
  json action;
  if (spec.desired) {
    action = {{"desired", *spec.desired}};
  } else if (spec.command) {
    json c = {{"name", spec.command->name}, {"args", spec.command->args}};
    if (spec.command->ttl_s) c["ttl_s"] = *spec.command->ttl_s;
    action = {{"command", std::move(c)}};
  }
  return {{"target", std::move(target)},
          {"action", std::move(action)},
          {"mode", spec.continuous ? "continuous" : "snapshot"},
          {"rate_per_s", spec.rate_per_s},
          {"timeout_s", spec.timeout_s},
          {"retries", spec.retries},
          {"abort", {{"failed_pct", spec.abort_failed_pct}, {"min_done", spec.abort_min_done}}}};
}

std::string job_command_key(std::string_view job, uint32_t attempt) {
  return "job:" + std::string(job) + ":" + std::to_string(attempt);
}

json job_document(const JobRecord& job, const JobCounts& counts) {
  json doc = {{"id", job.id},
              {"status", to_string(job.status)},
              {"created_at", job.created_at},
              {"updated_at", job.updated_at}};
  json spec = json::parse(job.spec, nullptr, false);
  if (spec.is_object()) {
    for (auto it = spec.begin(); it != spec.end(); ++it) doc[it.key()] = std::move(it.value());
  }
  doc["total"] = counts.total();
  doc["counts"] = {{"pending", counts.pending},     {"in_progress", counts.in_progress},
                   {"succeeded", counts.succeeded}, {"failed", counts.failed},
                   {"timed_out", counts.timed_out}, {"cancelled", counts.cancelled}};
  return doc;
}

json execution_json(const ExecutionRecord& e) {
  return {{"twin", e.twin},
          {"status", to_string(e.status)},
          {"attempts", e.attempts},
          {"updated_at", e.updated_at},
          {"detail", e.detail.empty() ? json() : json(e.detail)}};
}

}  // namespace doppel::twins
