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
// timestamps, the version after the update, timestamp, clientToken.
json shadow_update_accepted(const Twin& twin, const std::optional<json>& desired,
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

// Epoch milliseconds as AWS's timestamps: whole seconds.
inline int64_t aws_seconds(Millis ms) { return ms / 1000; }

}  // namespace doppel::twins
