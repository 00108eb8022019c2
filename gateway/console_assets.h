// The console's files (gateway/console/ and the libraries it embeds), compiled into doppeld by a
// build step (gateway/embed_console.cmake): nothing is read from disk or fetched at run time.
#pragma once

#include <span>
#include <string_view>

namespace doppel::gateway {

struct ConsoleAsset {
  std::string_view name;  // "app.js": served at /console/assets/<name>
  std::string_view data;
};

std::span<const ConsoleAsset> console_assets();

}  // namespace doppel::gateway
