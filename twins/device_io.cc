#include "twins/device_io.h"

#include "twins/closed_set.h"

namespace doppel::twins {

static_assert(std::variant_size_v<DeviceOutput> == kOutboundKindCount);

OutboundKind kind_of(const DeviceOutput& output) {
  switch (output.index()) {
    case 0:
      return OutboundKind::kDelta;
    case 1:
      return OutboundKind::kTwin;
    case 2:
      return OutboundKind::kCommand;
    case 3:
      return OutboundKind::kError;
    default:
      return OutboundKind::kReply;
  }
}

namespace {

constexpr NameTable<InboundKind, kInboundKindCount> kInboundNames{
    {"reported", "get", "status", "command_result", "delete", "jobs_query"}};
static_assert(kInboundNames.covers(InboundKind::kJobsQuery));
constexpr NameTable<ResultStatus, 4> kResultNames{
    {"succeeded", "failed", "rejected", "in_progress"}};
static_assert(kResultNames.covers(ResultStatus::kInProgress));

}  // namespace

std::string_view to_string(InboundKind kind) { return kInboundNames.name(kind); }
std::string_view to_string(ResultStatus status) { return kResultNames.name(status); }
std::optional<ResultStatus> parse_result_status(std::string_view s) {
  return kResultNames.parse(s);
}

}  // namespace doppel::twins
