// Status and Result<T>: how errors cross module boundaries in Doppel. Every failure a caller can
// act on is a value, never an exception; third-party exceptions are caught at the edge (Paho,
// SQLite, nlohmann) and converted here.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace doppel {

enum class StatusCode {
  kOk = 0,
  kMalformed,           // the input could not be parsed (JSON/Protobuf syntax, wrong envelope)
  kInvalidArgument,     // parsed, but a field has the wrong type or an invalid value
  kInvalidId,           // a device or command id does not match the id rules
  kTooLarge,            // a document or payload exceeds its size limit
  kTooDeep,             // a document nests deeper than the depth limit
  kNotFound,            // the twin or command does not exist
  kPreconditionFailed,  // If-Match named a version that is not the current one
  kConflict,     // the request conflicts with the current state (e.g. cancel a finished command)
  kQueueFull,    // the twin's command queue is at its cap
  kUnavailable,  // a dependency (store, broker) is not available right now; retry later
  kInternal,     // a bug or an unexpected failure; logged with detail
  kTimeout,      // a read ran past its time budget (--query-timeout-s) and was stopped
  kGone,         // what was asked for existed but retention removed it (HTTP 410)
  kFenced,       // the write's ownership epoch is no longer current (twins/partition.h)
  kNotOwner,     // a cluster node does not serve this twin's partition now (twins/ownership.h)
};
constexpr size_t kStatusCodeCount = static_cast<size_t>(StatusCode::kNotOwner) + 1;

// A stable machine-readable name for a code ("too_large"); used in problem types and errors topics.
std::string_view code_name(StatusCode code);
// The inverse of code_name().
std::optional<StatusCode> parse_code_name(std::string_view name);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<code_name>: <message>", for logs.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a T or a non-OK Status. Like absl::StatusOr, it refuses an OK status without a
// value: that is a bug at the call site, and it becomes a kInternal error rather than a success.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  // NOLINTNEXTLINE(google-explicit-constructor)
  Result(Status status)
      : v_(status.is_ok() ? Status(StatusCode::kInternal,
                                   "bug: a Result was made from an OK status without a value")
                          : std::move(status)) {}
  Result(StatusCode code, std::string message) : v_(Status(code, std::move(message))) {}

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const T& value() const& { return std::get<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }
  // The error; Status::ok() when a value is held.
  Status status() const { return is_ok() ? Status() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace doppel
