#include "twins/log.h"

#include <atomic>
#include <cstdio>

namespace doppel {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kWarn)};
LogSink& sink() {
  static LogSink s = [](LogLevel, std::string_view m) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(m.size()), m.data());
  };
  return s;
}

}  // namespace

void set_log_sink(LogSink s, LogLevel min_level) {
  sink() = std::move(s);
  g_min_level.store(static_cast<int>(min_level));
}

bool log_enabled(LogLevel level) { return static_cast<int>(level) >= g_min_level.load(); }

void log(LogLevel level, std::string_view message) {
  if (log_enabled(level)) sink()(level, message);
}

}  // namespace doppel
