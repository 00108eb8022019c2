// TempDir: a fresh directory under the system's temp directory, removed with everything in it
// when the object goes. Test-only.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace doppel::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "doppel-test-") {
    std::mt19937_64 rng{std::random_device{}()};
    path_ = std::filesystem::temp_directory_path() / (prefix + std::to_string(rng()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace doppel::testing
