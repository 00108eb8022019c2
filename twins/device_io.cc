#include "twins/device_io.h"

namespace doppel::twins {

OutboundKind kind_of(const DeviceOutput& output) {
  switch (output.index()) {
    case 0:
      return OutboundKind::kDelta;
    case 1:
      return OutboundKind::kTwin;
    case 2:
      return OutboundKind::kCommand;
    default:
      return OutboundKind::kError;
  }
}

std::string_view to_string(InboundKind kind) {
  switch (kind) {
    case InboundKind::kReported:
      return "reported";
    case InboundKind::kGet:
      return "get";
    case InboundKind::kStatus:
      return "status";
    case InboundKind::kCommandResult:
      return "command_result";
  }
  return "reported";
}

std::string_view to_string(ResultStatus status) {
  switch (status) {
    case ResultStatus::kSucceeded:
      return "succeeded";
    case ResultStatus::kFailed:
      return "failed";
    case ResultStatus::kRejected:
      return "rejected";
    case ResultStatus::kInProgress:
      return "in_progress";
  }
  return "succeeded";
}

std::optional<ResultStatus> parse_result_status(std::string_view s) {
  for (auto st : {ResultStatus::kSucceeded, ResultStatus::kFailed, ResultStatus::kRejected,
                  ResultStatus::kInProgress}) {
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

}  // namespace doppel::twins
