// AWS IoT's device topics (the classic Device Shadow and the Jobs topics), the second dialect a
// device may speak beside Doppel's own scheme (topics.h). The thing name is the device id.
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mqtt/topics.h"

namespace doppel::mqtt {

inline constexpr std::string_view kAwsThingsPrefix = "$aws/things/";
// The command ids a kJobsQuery carries for jobs/$next/get and jobs/start-next (a real job id
// never starts with '$'); jobs/get carries none.
inline constexpr std::string_view kJobsNext = "$next";
inline constexpr std::string_view kJobsStartNext = "$start-next";

// True for topics under $aws/things/.
bool is_aws_topic(std::string_view topic);

// Parses a shadow request a device published: $aws/things/{thing}/shadow/update, /get or
// /delete. A named shadow's request ($aws/things/{thing}/shadow/name/{name}/...) is kNotFound
// (only the classic shadow is offered); anything else kMalformed; a thing name that breaks the
// id rules kInvalidId.
Result<InboundTopic> parse_aws_topic(std::string_view topic, const twins::Limits& limits);

// Where the gateway answers: …/shadow/update/delta, …/{op}/accepted, …/{op}/rejected,
// …/update/documents. `kind` kTwin is answered as get/accepted.
std::string aws_outbound_topic(std::string_view thing, twins::OutboundKind kind,
                               twins::ShadowOp op);

// $aws/things/{thing}/jobs/{suffix}.
std::string aws_jobs_topic(std::string_view thing, std::string_view suffix);

// The topic a device publishes a shadow request on (for the simulator and tests).
std::string aws_device_topic(std::string_view thing, twins::ShadowOp op);

// Where a request on `topic` is refused: the request topic with /rejected appended, when it is a
// usable topic under $aws/things/{thing}/ (for requests that never reach a twin). Empty if not.
std::string aws_rejected_topic(std::string_view topic);

// What the gateway subscribes to for the AWS dialect.
std::vector<std::string> aws_gateway_subscriptions();

}  // namespace doppel::mqtt
