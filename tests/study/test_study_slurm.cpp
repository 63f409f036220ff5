// scripts/slurm/study-array.sbatch, as Slurm runs it: a throwaway single-node Slurm (Debian's
// slurm-wlm and munge: munged, slurmctld and slurmd as root, every file in a temporary folder,
// no systemd, no cgroups, no accounting) takes the job array, whose tasks are `playbook study
// work` workers meeting in the test PostgreSQL server (tests/tuning/pg_server.h), and the study
// completes with every trial ended once. Skipped where the Slurm binaries are absent (install
// them with scripts/setup) or the test is not root (slurmd runs jobs as their user). The same
// script run by bash without Slurm, as a task would run it, is tested on every machine.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/cli_runner.h"
#include "tests/tuning/pg_server.h"
#include "tuning/study.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;
using pb::testing::read_file;
using pb::testing::run_playbook;
using pb::testing::TempDir;
using pb::testing::write_file;
using pb::testing_pg::PgServer;

const std::string kScript = std::string(PLAYBOOK_SOURCE_DIR) + "/scripts/slurm/study-array.sbatch";

// The first of PATH, /usr/sbin, /sbin holding an executable `name`; empty when none does.
std::string find_program(const std::string& name) {
  std::string dirs = std::getenv("PATH") ? std::getenv("PATH") : "";
  dirs += ":/usr/sbin:/sbin:/usr/bin";
  std::istringstream in(dirs);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    const fs::path p = fs::path(dir) / name;
    if (!dir.empty() && ::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// A command study of `trials` trials that sleep `sleep_s` and log "end INDEX" to a ledger.
void write_study(const fs::path& dir, int trials, double sleep_s) {
  write_file(
      dir / "trial.sh",
      "#!/bin/sh\nsleep " + std::to_string(sleep_s) +
          "\necho \"{\\\"objective\\\": $PLAYBOOK_TRIAL_INDEX}\" > \"$PLAYBOOK_TRIAL_RESULT\"\n"
          "echo \"end $PLAYBOOK_TRIAL_INDEX\" >> " +
          (dir / "ledger.txt").string() + "\n");
  write_file(dir / "study.toml",
             "name = \"array\"\nkind = \"command\"\ncommand = [\"sh\", \"trial.sh\"]\n"
             "trials = " +
                 std::to_string(trials) +
                 "\nseed = 5\nretries = 0\n"
                 "[workers]\nheartbeat_s = 0.5\nstale_after_s = 10.0\n"
                 "[search.lr]\nscale = \"log\"\nmin = 1e-4\nmax = 1.0\n");
}

// write_study into `root` (trials sleeping 0.2 s), then `playbook study init` of it into a new
// database of the test server, as the README does before submitting the array.
struct InitializedStudy {
  std::string url;
  fs::path dir;  // root/studies/array
  int exit_code = 0;
  std::string err;
};
InitializedStudy init_study(const fs::path& root, int trials) {
  write_study(root, trials, 0.2);
  InitializedStudy study;
  study.url = PgServer::get().new_database();
  study.dir = root / "studies" / "array";
  const auto init = run_playbook({"study", "init", (root / "study.toml").string(), "--dir",
                                  study.dir.string(), "--store", study.url},
                                 root / "init");
  study.exit_code = init.exit_code;
  study.err = init.err;
  return study;
}

// Every trial completed, with objective = index, ended once according to the ledger.
void expect_study_complete(const std::string& url, const fs::path& dir, int trials) {
  const auto records = open_store(url)->trials();
  ASSERT_EQ(records.size(), static_cast<std::size_t>(trials));
  for (const TrialRecord& t : records) {
    EXPECT_EQ(t.status, TrialStatus::Completed) << "trial " << t.index << ": " << t.reason;
    EXPECT_EQ(t.objective, std::optional<double>(static_cast<double>(t.index)));
    EXPECT_EQ(t.attempts, 1) << "trial " << t.index;
  }
  std::ifstream ledger(dir / "ledger.txt");
  std::map<int64_t, int> ends;
  std::string word;
  int64_t index = 0;
  while (ledger >> word >> index) ++ends[index];
  EXPECT_EQ(ends.size(), static_cast<std::size_t>(trials));
  for (const auto& [i, n] : ends) EXPECT_EQ(n, 1) << "trial " << i << " ended " << n << " times";
}

// munged, slurmctld and slurmd of one node named localhost, configured and logging in `dir`;
// stopped (scontrol shutdown, then the pid files) by the destructor.
class ThrowawaySlurm {
 public:
  explicit ThrowawaySlurm(const fs::path& dir) : dir_(dir) {
    for (const char* sub : {"state", "spool", "munge", "log"}) fs::create_directories(dir / sub);
    fs::permissions(dir / "munge", fs::perms::owner_all);
    const std::string key = (dir / "munge" / "munge.key").string();
    if (!run("mungekey --create --keyfile=" + key) &&
        !run("dd if=/dev/urandom of=" + key + " bs=1024 count=1 status=none")) {
      return;
    }
    ::chmod(key.c_str(), 0600);
    socket_ = (dir / "munge" / "munge.sock").string();
    if (!run("munged --force --key-file=" + key + " --socket=" + socket_ +
             " --pid-file=" + (dir / "munge" / "munged.pid").string() +
             " --log-file=" + (dir / "log" / "munged.log").string() +
             " --seed-file=" + (dir / "munge" / "seed").string())) {
      return;
    }
    munged_ = true;
    const unsigned cpus = std::max(2u, std::thread::hardware_concurrency());
    std::ofstream conf(dir / "slurm.conf");
    conf << "ClusterName=pbtest\nSlurmctldHost=localhost\nSlurmUser=root\nSlurmdUser=root\n"
         << "AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket=" << socket_ << "\n"
         << "SlurmctldPort=" << free_port() << "\nSlurmdPort=" << free_port() << "\n"
         << "StateSaveLocation=" << (dir / "state").string() << "\n"
         << "SlurmdSpoolDir=" << (dir / "spool").string() << "\n"
         << "SlurmctldPidFile=" << (dir / "slurmctld.pid").string() << "\n"
         << "SlurmdPidFile=" << (dir / "slurmd.pid").string() << "\n"
         << "SlurmctldLogFile=" << (dir / "log" / "slurmctld.log").string() << "\n"
         << "SlurmdLogFile=" << (dir / "log" / "slurmd.log").string() << "\n"
         << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
         << "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
         << "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\n"
         << "MpiDefault=none\n"
         << "NodeName=localhost CPUs=" << cpus << " State=UNKNOWN\n"
         << "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n";
    conf.close();
    env_ = "SLURM_CONF=" + (dir / "slurm.conf").string() + " ";
    if (!run(env_ + "slurmctld -i")) return;
    slurmctld_ = true;
    if (!run(env_ + "slurmd -N localhost")) return;
    slurmd_ = true;
    // The node reports in: idle.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (std::chrono::steady_clock::now() < deadline) {
      if (output("sinfo -h -o %t") == "idle") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    error_ = "the node never became idle: sinfo says " + output("sinfo -h -o %t");
  }

  ~ThrowawaySlurm() {
    if (slurmctld_ && slurmd_) run(env_ + "scancel --partition=debug >/dev/null 2>&1");
    if (slurmctld_ || slurmd_) run(env_ + "scontrol shutdown >/dev/null 2>&1");
    stop("slurmd.pid", slurmd_);
    stop("slurmctld.pid", slurmctld_);
    stop("munge/munged.pid", munged_);
  }
  ThrowawaySlurm(const ThrowawaySlurm&) = delete;
  ThrowawaySlurm& operator=(const ThrowawaySlurm&) = delete;

  bool ok() const { return error_.empty(); }
  // The error and the daemons' last log lines.
  std::string error() const {
    std::string logs;
    for (const char* f : {"munged.log", "slurmctld.log", "slurmd.log"}) {
      logs +=
          std::string("\n== ") + f + ":\n" + output("tail -n 15 " + (dir_ / "log" / f).string());
    }
    return error_ + logs;
  }
  // The standard output of `command` run with SLURM_CONF pointing to this cluster, without its
  // trailing newline.
  std::string output(const std::string& command) const {
    std::string out = read_output(env_ + command);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

 private:
  bool run(const std::string& cmd) {
    if (std::system(cmd.c_str()) == 0) return true;
    if (error_.empty()) error_ = "failed: " + cmd;
    return false;
  }
  static std::string read_output(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      std::size_t n = 0;
      while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
      ::pclose(p);
    }
    return out;
  }
  // SIGTERM, then SIGKILL after 10 s, to the daemon of a pid file.
  void stop(const std::string& pid_file, bool started) {
    if (!started) return;
    std::ifstream in(dir_ / pid_file);
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid, SIGKILL);
  }

  fs::path dir_;
  std::string socket_, env_, error_;
  bool munged_ = false, slurmctld_ = false, slurmd_ = false;
};

TEST(StudySlurm, TheSbatchArrayFinishesAStudyInPostgres) {
  for (const char* p : {"sbatch", "slurmctld", "slurmd", "munged", "scontrol", "sinfo"}) {
    if (find_program(p).empty()) {
      GTEST_SKIP() << "Slurm is not installed (no " << p
                   << "): install slurm-wlm and munge (scripts/setup) to submit the array";
    }
  }
  if (::geteuid() != 0) GTEST_SKIP() << "the throwaway Slurm runs as root (slurmd, munged)";
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  TempDir tmp("pb_study_slurm");
  ThrowawaySlurm slurm(tmp / "slurm");
  ASSERT_TRUE(slurm.ok()) << slurm.error();

  const int trials = 12;
  const InitializedStudy study = init_study(tmp.path(), trials);
  ASSERT_EQ(study.exit_code, 0) << study.err;
  const std::string& url = study.url;
  const fs::path& dir = study.dir;

  // As the README submits it; this node has no GPU (GRES) and few cores, so the script's
  // --gres and --cpus-per-task are overridden on the command line, as sbatch allows.
  const std::string job = slurm.output(
      "PLAYBOOK_STORE='" + url + "' STUDY_DIR='" + dir.string() + "' PLAYBOOK='" + PLAYBOOK_BIN +
      "' sbatch --parsable --array=0-3 --gres=none --cpus-per-task=1 --output=" +
      (tmp / "task-%a.out").string() + " " + kScript + " 2>&1");
  ASSERT_FALSE(job.empty()) << slurm.error();
  ASSERT_EQ(job.find_first_not_of("0123456789"), std::string::npos) << job << slurm.error();
  // The array leaves the queue when every task ended (polled: sbatch --wait sleeps up to 10 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  std::string queued = "?";
  while (!queued.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    queued = slurm.output("squeue -h -j " + job + " -o %i 2>/dev/null");
  }
  const std::string tasks = read_file(tmp / "task-0.out") + read_file(tmp / "task-1.out") +
                            read_file(tmp / "task-2.out") + read_file(tmp / "task-3.out");
  ASSERT_TRUE(queued.empty()) << "still queued after 300 s: " << queued << tasks << slurm.error();
  for (int task = 0; task < 4; ++task) {  // slurmctld keeps ended jobs for MinJobAge (300 s)
    const std::string info = slurm.output("scontrol show job " + job + "_" + std::to_string(task));
    EXPECT_NE(info.find("JobState=COMPLETED"), std::string::npos) << info << tasks;
    EXPECT_NE(info.find("ExitCode=0:0"), std::string::npos) << info << tasks;
  }
  for (int task = 0; task < 4; ++task) {
    const std::string out = read_file(tmp / ("task-" + std::to_string(task) + ".out"));
    EXPECT_NE(out.find("study worker: task " + std::to_string(task) + " of job"), std::string::npos)
        << out;
    EXPECT_NE(out.find("worker done:"), std::string::npos) << out;
  }
  expect_study_complete(url, tmp.path(), trials);
  const auto status = run_playbook({"study", "status", dir.string()}, tmp / "status");
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find(std::to_string(trials) + " completed"), std::string::npos)
      << status.out;
}

// Without Slurm: the script run by bash as two array tasks would run it (the SLURM_* variables
// set, no GPU), concurrently, finishes the study; a missing PLAYBOOK_STORE is one clear line.
TEST(StudySlurm, TheSbatchScriptsWorkerCommandFinishesAStudy) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  TempDir tmp("pb_study_sbatch");
  const int trials = 8;
  const InitializedStudy study = init_study(tmp.path(), trials);
  ASSERT_EQ(study.exit_code, 0) << study.err;
  const std::string& url = study.url;
  const fs::path& dir = study.dir;

  std::string script = "set -u\n";
  for (int task = 0; task < 2; ++task) {
    script += "env -u CUDA_VISIBLE_DEVICES SLURM_ARRAY_JOB_ID=77 SLURM_ARRAY_TASK_ID=" +
              std::to_string(task) + " SLURM_CPUS_PER_TASK=1 PLAYBOOK_STORE='" + url +
              "' STUDY_DIR='" + dir.string() + "' PLAYBOOK='" + PLAYBOOK_BIN + "' bash " + kScript +
              " >" + (tmp / ("task-" + std::to_string(task) + ".out")).string() + " 2>&1 &\np" +
              std::to_string(task) + "=$!\n";
  }
  script += "wait $p0 && wait $p1\n";
  write_file(tmp / "tasks.sh", script);
  ASSERT_EQ(std::system(("bash " + (tmp / "tasks.sh").string()).c_str()), 0)
      << read_file(tmp / "task-0.out") << read_file(tmp / "task-1.out");
  for (int task = 0; task < 2; ++task) {
    const std::string out = read_file(tmp / ("task-" + std::to_string(task) + ".out"));
    EXPECT_NE(out.find("study worker: task " + std::to_string(task) + " of job 77"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find(", cpu"), std::string::npos) << "no GPU: --device cpu; " << out;
  }
  expect_study_complete(url, tmp.path(), trials);

  const std::string missing = "env -u PLAYBOOK_STORE STUDY_DIR=x bash " + kScript + " >" +
                              (tmp / "missing.txt").string() + " 2>&1";
  EXPECT_NE(std::system(missing.c_str()), 0);
  EXPECT_NE(read_file(tmp / "missing.txt").find("PLAYBOOK_STORE"), std::string::npos)
      << read_file(tmp / "missing.txt");
}

}  // namespace
}  // namespace pb::tuning
