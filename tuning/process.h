#pragma once
// Child processes for studies: workers and trials are real processes (a crash ends a trial, not
// the study), started with fork/exec, output appended to a log file, in their own process group
// (a terminal's Ctrl-C reaches the runner only, which decides what to stop), and with a parent
// death signal (prctl PR_SET_PDEATHSIG) so that a killed worker's trial dies with it and the
// trial's claim goes stale instead of running on unowned.
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace pb::tuning {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is the program (searched in PATH when bare)
  std::vector<std::string> env;   // "KEY=VALUE" added to (or replacing in) the environment
  std::filesystem::path cwd;      // empty: the parent's
  std::filesystem::path output;   // stdout and stderr appended here; empty: the parent's
  bool own_process_group = true;
  int death_signal = 9;  // SIGKILL when the parent dies; 0: none
};

// Starts the child; throws pb::Error when fork fails. A failing exec writes one line to the
// output and exits with 127.
pid_t spawn(const SpawnOptions& options);

struct ExitStatus {
  int code = -1;            // exit code, or -1 when killed
  int signal = 0;           // the signal that killed it, or 0
  std::string str() const;  // "exit code 1", "killed by signal 9 (Killed)"
};

// Non-blocking wait: the status when the child has ended.
std::optional<ExitStatus> try_wait(pid_t pid);
ExitStatus wait_for(pid_t pid);

// "host:pid:starttime": identifies a live process across PID reuse.
std::string process_identity();
// True when identity names a process on this host that no longer exists (or whose PID was
// reused); false when it lives or runs on another host.
bool is_dead_local_process(const std::string& identity);

// The path of the running executable (/proc/self/exe).
std::filesystem::path self_executable();

}  // namespace pb::tuning
