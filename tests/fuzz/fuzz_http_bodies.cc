// libFuzzer: HTTP request bodies and headers as the API parses them: never a crash, and a body
// that parses is within the limits; a job specification that parses reads back the same from the
// form it is stored in.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "twins/jobs.h"
#include "twins/requests.h"

using namespace doppel::twins;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)parse_if_match(text);
  Limits limits;
  limits.max_document_bytes = 4096;
  auto body = parse_json(text, limits.max_payload_bytes(), limits.max_depth + 2);
  if (!body) return 0;
  for (bool patch : {false, true}) {
    auto s = parse_twin_settings(*body, patch, limits);
    if (s && s->desired && !check_state_document(*s->desired, limits, "desired")) std::abort();
  }
  auto c = parse_command_request(*body, limits);
  if (c && (c->name.empty() || depth_of(c->args) > limits.max_depth)) std::abort();
  if (auto job = parse_job_spec(*body, limits)) {
    if (!job->where == job->twins.empty() || !job->desired == !job->command) std::abort();
    auto again = parse_job_spec(job_spec_json(*job), limits);
    if (!again || job_spec_json(*again) != job_spec_json(*job)) std::abort();
  }
  if (body->is_object()) {
    if (check_state_document(*body, limits, "patch") && depth_of(*body) > limits.max_depth) {
      std::abort();
    }
  }
  return 0;
}
