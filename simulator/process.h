// A child process (for tests and doppel-bench): started with its output in a log file, killed with
// SIGKILL if the test process dies (PR_SET_PDEATHSIG), and reaped on destruction.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace doppel::sim {

class Process {
 public:
  Process() = default;
  Process(std::vector<std::string> argv, std::string log_file);
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits for exit; true if it exited within `timeout`. `exit_status` gets the wait status.
  bool wait_exit(std::chrono::milliseconds timeout, int* exit_status = nullptr);
  // SIGTERM, then SIGKILL after `grace`.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  const std::string& log_file() const { return log_; }
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string log_;
};

}  // namespace doppel::sim
