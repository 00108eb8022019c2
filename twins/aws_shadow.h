// The AWS IoT Device Shadow documents (the classic, unnamed shadow) of a twin, for devices that
// speak the AWS dialect (twins::Dialect::kAws). One twin behind both dialects: a shadow's `state`
// is the twin's desired and reported documents, its `version` is the twin's document version (one
// counter that every change to either bumps), and its metadata is the twin's, with each leaf's
// time as AWS gives it: {"timestamp": epoch seconds}. Pure functions; thread-safe.
#pragma once

#include <string>

#include "twins/clock.h"
#include "twins/document.h"
#include "twins/twin.h"

namespace doppel::twins {

// Whether the twin has a shadow in AWS's sense: a state that is not empty. A get or delete of a
// twin without one is refused with 404, as AWS refuses a shadow that does not exist.
bool has_shadow(const Twin& twin);

// `…/get/accepted`: state (desired, reported, and delta when not empty), metadata, version,
// timestamp, clientToken (when the request had one).
json shadow_get_accepted(const Twin& twin, Millis now, const std::string& token);

// `…/update/accepted`: the sections the request sent (null leaves included) with their metadata
// timestamps, the version after the update, timestamp, clientToken — as JSON text, written
// directly (every AWS-dialect report gets one: ShadowReply::text).
std::string shadow_update_accepted(const Twin& twin, const std::optional<json>& desired,
                                   const json& reported, Millis now, const std::string& token);

// The part of `…/update/documents` describing one state: {state: {desired, reported}, metadata,
// version}. Taken before the update for `previous`.
json shadow_state(const Twin& twin);
// `…/update/documents`: previous and current, timestamp, clientToken.
json shadow_documents(json previous, const Twin& twin, Millis now, const std::string& token);

// `…/delete/accepted`: version, timestamp, clientToken.
json shadow_delete_accepted(const Twin& twin, Millis now, const std::string& token);

// The metadata AWS sends with a delta: each of the delta's leaves with the time desired set it.
json delta_metadata(const json& delta, const json& desired_meta);

// AWS IoT Jobs, served from the twin's command queue: a command is a job execution whose job id
// is the command id and whose job document is {"operation": name, "args": args}. Its status in
// AWS's words: QUEUED, IN_PROGRESS (sent to the device), SUCCEEDED, FAILED, REJECTED, TIMED_OUT
// (timed out or expired), CANCELED.
std::string_view aws_job_status(CommandStatus status);
// An execution as AWS describes it (with its job document when `with_document`).
json job_execution(const Twin& twin, const Command& command, bool with_document);
// Its summary, as jobs/get lists it.
json job_summary(const Command& command);

// Epoch milliseconds as AWS's timestamps: whole seconds.
inline int64_t aws_seconds(Millis ms) { return ms / 1000; }

}  // namespace doppel::twins
