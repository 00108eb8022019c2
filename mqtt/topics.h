// The MQTT topic scheme of DESIGN §4 under a configurable prefix ("twins" by default).
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "twins/device_io.h"
#include "twins/document.h"
#include "twins/status.h"

namespace doppel::mqtt {

struct InboundTopic {
  twins::InboundKind kind = twins::InboundKind::kReported;
  std::string device_id;
  std::string command_id;  // for kCommandResult
};

// Parses a topic a device published to. kMalformed for a topic outside the scheme, kInvalidId
// for a device or command id that breaks the id rules.
Result<InboundTopic> parse_inbound_topic(std::string_view topic, std::string_view prefix,
                                         const twins::Limits& limits);

// The topic the gateway publishes `kind` to for `device_id`.
std::string outbound_topic(std::string_view prefix, std::string_view device_id,
                           twins::OutboundKind kind, std::string_view command_id = {});

// A device's own topics, for devices and tests.
std::string device_topic(std::string_view prefix, std::string_view device_id,
                         twins::InboundKind kind, std::string_view command_id = {});

// What the gateway subscribes to.
std::vector<std::string> gateway_subscriptions(std::string_view prefix);

// The device-id segment of a topic under `prefix`, if it is a usable topic level (for replying
// on the errors topic of a device whose id is invalid). Empty when none.
std::string raw_device_segment(std::string_view topic, std::string_view prefix);

}  // namespace doppel::mqtt
