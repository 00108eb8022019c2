// Names the calling thread, as `top -H`, `perf` and debuggers show it: doppeld's threads say what
// they do (shard-0, sqlite-writer, http-io, ...). Linux keeps 15 characters; longer names are cut.
// Thread-safe.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>

namespace doppel {

inline void name_this_thread(std::string_view name) {
  const std::string cut(name.substr(0, 15));
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace doppel
