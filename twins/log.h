// A minimal logging facade so the inner modules can log without depending on a logging library.
// The gateway installs a sink that forwards to spdlog; the default writes warnings and errors to
// stderr. Thread-safe.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace doppel {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };

using LogSink = std::function<void(LogLevel, std::string_view)>;

// Installs `sink` and the lowest level that reaches it. Call before starting threads.
void set_log_sink(LogSink sink, LogLevel min_level);
bool log_enabled(LogLevel level);
void log(LogLevel level, std::string_view message);

inline void log_info(std::string_view m) { log(LogLevel::kInfo, m); }
inline void log_warn(std::string_view m) { log(LogLevel::kWarn, m); }
inline void log_error(std::string_view m) { log(LogLevel::kError, m); }
inline void log_debug(std::string_view m) { log(LogLevel::kDebug, m); }

}  // namespace doppel
