// fork/exec with a log file, a process group and a parent death signal; see process.h.
#include "tuning/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "runtime/core/error.h"

extern char** environ;

namespace pb::tuning {
namespace fs = std::filesystem;

pid_t spawn(const SpawnOptions& options) {
  if (options.argv.empty()) throw pb::Error("spawn: empty command");
  // Everything the child needs is built before fork: after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& add : options.env) {
      if (add.substr(0, add.find('=')) == key) replaced = true;
    }
    if (!replaced) env_strings.push_back(entry);
  }
  for (const std::string& add : options.env) env_strings.push_back(add);
  std::vector<char*> envp, argv;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = options.argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  const std::string cwd = options.cwd.string();
  const std::string output = options.output.string();
  const std::string exec_error = "spawn: cannot execute " + options.argv[0] + "\n";
  const std::string cwd_error = "spawn: cannot enter " + cwd + "\n";
  // execvpe's PATH search, done here so the child stays simple.
  std::string program = options.argv[0];
  if (program.find('/') == std::string::npos) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      const fs::path candidate = fs::path(dir.empty() ? "." : dir) / program;
      if (access(candidate.c_str(), X_OK) == 0) {
        program = candidate.string();
        break;
      }
    }
  }
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) throw pb::Error(std::string("spawn: fork failed: ") + std::strerror(errno));
  if (pid > 0) return pid;

  // Child.
  if (options.death_signal != 0) {
    prctl(PR_SET_PDEATHSIG, options.death_signal);
    if (getppid() != parent) _exit(128 + options.death_signal);  // the parent already died
  }
  if (options.own_process_group) setpgid(0, 0);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (!output.empty()) {
    const int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
  }
  if (!cwd.empty() && chdir(cwd.c_str()) != 0) {
    (void)!write(STDERR_FILENO, cwd_error.data(), cwd_error.size());
    _exit(127);
  }
  execve(program.c_str(), argv.data(), envp.data());
  (void)!write(STDERR_FILENO, exec_error.data(), exec_error.size());
  _exit(127);
}

std::string ExitStatus::str() const {
  if (signal != 0)
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exit code " + std::to_string(code);
}

namespace {
ExitStatus decode(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) s.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) s.signal = WTERMSIG(status);
  return s;
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// Field 22 of /proc/PID/stat: the start time in clock ticks since boot; "" when gone.
std::string start_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return "";
  const std::size_t paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return "";
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return "";
  }
  return field;
}
}  // namespace

std::optional<ExitStatus> try_wait(pid_t pid) {
  int status = 0;
  const pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == pid) return decode(status);
  if (r < 0 && errno == ECHILD) return ExitStatus{};
  return std::nullopt;
}

ExitStatus wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ExitStatus{};
  }
  return decode(status);
}

std::string process_identity() {
  const pid_t pid = getpid();
  return hostname() + ":" + std::to_string(pid) + ":" + start_time(pid);
}

bool is_dead_local_process(const std::string& identity) {
  const std::size_t b = identity.rfind(':');
  if (b == std::string::npos || b == 0) return false;
  const std::size_t a = identity.rfind(':', b - 1);
  if (a == std::string::npos) return false;
  if (identity.substr(0, a) != hostname()) return false;
  pid_t pid = 0;
  try {
    pid = static_cast<pid_t>(std::stol(identity.substr(a + 1, b - a - 1)));
  } catch (const std::exception&) {
    return false;
  }
  const std::string start = start_time(pid);
  // A zombie still has its stat entry; it is dead for our purposes.
  if (start.empty()) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const std::size_t paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') return true;
  return start != identity.substr(b + 1);
}

fs::path self_executable() {
  return fs::read_symlink("/proc/self/exe");
}

}  // namespace pb::tuning
