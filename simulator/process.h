// A child process (for tests and doppel-bench): started with its output in a log file, killed with
// SIGKILL if the test process dies (PR_SET_PDEATHSIG), and reaped on destruction.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace doppel::sim {

// CPU time (user + system) a process has used, in seconds; -1 if it is gone.
double cpu_seconds(pid_t pid);
// Resident set size, KiB; -1 if unknown.
long rss_kib(pid_t pid);

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
