// Studies across machines, with real processes and a real PostgreSQL server
// (tests/tuning/pg_server.h): `playbook study init --store URL` creates the study, workers in
// their own directories (as on other machines) share the work with `study work DIR --store URL`
// without duplicates, a SIGKILLed worker's claim is retried, `study migrate` copies the study
// PostgreSQL -> SQLite -> PostgreSQL unchanged, and store errors are one line.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
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
using pb::testing::spawn_playbook;
using pb::testing::TempDir;
using pb::testing::wait_exit;
using pb::testing::write_file;
using pb::testing_pg::PgServer;

// A trial that logs "start/end INDEX WORKER_PID" to a shared ledger, sleeps and reports
// objective = its index.
void write_trial_script(const fs::path& dir, double sleep_s) {
  const std::string ledger = (dir / "ledger.txt").string();
  write_file(dir / "trial.sh",
             "#!/bin/sh\n"
             "echo \"start $PLAYBOOK_TRIAL_INDEX $PPID\" >> " +
                 ledger + "\n" + "sleep " + std::to_string(sleep_s) + "\n" +
                 "echo \"{\\\"objective\\\": $PLAYBOOK_TRIAL_INDEX}\" > "
                 "\"$PLAYBOOK_TRIAL_RESULT\"\n"
                 "echo \"end $PLAYBOOK_TRIAL_INDEX $PPID\" >> " +
                 ledger + "\n");
  write_file(dir / "study.toml",
             "name = \"spread\"\nkind = \"command\"\ncommand = [\"sh\", \"trial.sh\"]\n"
             "trials = 12\nseed = 3\nretries = 1\n"
             "[workers]\nheartbeat_s = 0.5\nstale_after_s = 5.0\n"
             "[search.lr]\nscale = \"log\"\nmin = 1e-4\nmax = 1.0\n");
}

pid_t pid_of_worker(const std::string& worker) {  // host:pid:start
  std::istringstream in(worker);
  std::string host, pid;
  std::getline(in, host, ':');
  std::getline(in, pid, ':');
  return pid.empty() ? 0 : static_cast<pid_t>(std::stol(pid));
}

TEST(StudyPostgres, WorkersOnManyMachinesShareTheWorkAndAKilledClaimIsRetried) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const std::string url = pg.new_database();
  TempDir tmp("pb_study_pg");
  write_trial_script(tmp.path(), 0.3);
  const auto init = run_playbook({"study", "init", (tmp / "study.toml").string(), "--dir",
                                  (tmp / "origin").string(), "--store", url},
                                 tmp / "init");
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_FALSE(fs::exists(tmp / "origin" / "study.db")) << "the study lives in PostgreSQL";

  // A worker that dies while it holds a claim.
  const auto work = [&](const std::string& name) {
    return spawn_playbook({"study", "work", (tmp / name).string(), "--store", url},
                          tmp / (name + "_out.txt"), tmp / (name + "_err.txt"));
  };
  const pid_t doomed = work("doomed");
  int64_t killed_index = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (killed_index < 0 && std::chrono::steady_clock::now() < deadline) {
    for (const TrialRecord& t : open_store(url)->trials()) {
      if (t.status == TrialStatus::Running && pid_of_worker(t.worker) == doomed) {
        killed_index = t.index;
      }
    }
    if (killed_index < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(killed_index, 0) << read_file(tmp / "doomed_err.txt");
  ::kill(doomed, SIGKILL);
  wait_exit(doomed);

  // Two workers on "two machines": each its own directory, only the store shared.
  const pid_t a = work("a"), b = work("b");
  EXPECT_EQ(wait_exit(a), 0) << read_file(tmp / "a_err.txt");
  EXPECT_EQ(wait_exit(b), 0) << read_file(tmp / "b_err.txt");

  const Study study = load_study(tmp / "a");
  ASSERT_EQ(study.trials.size(), 12u);
  std::set<pid_t> enders;
  for (const TrialRecord& t : study.trials) {
    EXPECT_EQ(t.status, TrialStatus::Completed) << "trial " << t.index << ": " << t.reason;
    EXPECT_EQ(*t.objective, static_cast<double>(t.index));
    EXPECT_EQ(t.attempts, t.index == killed_index ? 2 : 1) << "trial " << t.index;
    enders.insert(pid_of_worker(t.worker));
  }
  EXPECT_EQ(enders, (std::set<pid_t>{a, b})) << "both workers ended trials, the dead one none";
  std::ifstream ledger(tmp / "ledger.txt");
  std::map<int64_t, int> ends;
  std::string word;
  int64_t index = 0;
  pid_t pid = 0;
  while (ledger >> word >> index >> pid) {
    if (word == "end" && pid != doomed) ++ends[index];
  }
  ASSERT_EQ(ends.size(), 12u);
  for (const auto& [i, n] : ends) EXPECT_EQ(n, 1) << "trial " << i << " ended " << n << " times";
  // Each worker's run directories are its own; the store says where each trial ran.
  for (const TrialRecord& t : study.trials) {
    const fs::path dir = tmp / (pid_of_worker(t.worker) == a ? "a" : "b") / t.run_dir;
    EXPECT_TRUE(fs::exists(dir / "trial.log")) << dir;
  }
  const auto status = run_playbook({"study", "status", (tmp / "b").string()}, tmp / "status");
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("12 completed"), std::string::npos) << status.out;
  // The tracking table finds directories bound to a remote store.
  const auto table = run_playbook({"studies", (tmp / "origin").string()}, tmp / "studies");
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("spread"), std::string::npos) << table.out;

  // PostgreSQL -> SQLite -> PostgreSQL: the same records.
  const std::string copy = (tmp / "copy.db").string(), back = pg.new_database();
  for (const auto& [src, dst] : {std::pair{url, copy}, std::pair{copy, back}}) {
    const auto m = run_playbook({"study", "migrate", src, dst}, tmp / "migrate");
    ASSERT_EQ(m.exit_code, 0) << m.err;
  }
  const auto x = open_store(url)->trials(), y = open_store(back)->trials();
  ASSERT_EQ(x.size(), y.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].worker, y[i].worker);
    EXPECT_EQ(x[i].objective, y[i].objective);
    EXPECT_EQ(x[i].attempts, y[i].attempts);
    EXPECT_EQ(x[i].started, y[i].started);
    EXPECT_EQ(x[i].finished, y[i].finished);
    EXPECT_EQ(x[i].params_json, y[i].params_json);
  }
  const auto again = run_playbook({"study", "migrate", copy, back}, tmp / "again");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("holds a study already"), std::string::npos) << again.err;
}

TEST(StudyPostgres, StoreErrorsAreOneLine) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  TempDir tmp("pb_study_pg_err");
  for (const std::string& url :
       {std::string("postgresql://u@h/db?nosuchoption=1"), pg.url("postgres", "wrong"),
        "postgresql://postgres@127.0.0.1:" + std::to_string(pg.port() + 1) + "/postgres"}) {
    const auto r =
        run_playbook({"study", "work", (tmp / "w").string(), "--store", url}, tmp / "run");
    EXPECT_EQ(r.exit_code, 1) << url;
    EXPECT_EQ(r.err.rfind("playbook: error: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_EQ(r.err.find("wrong"), std::string::npos) << "the password is not shown: " << r.err;
    fs::remove_all(tmp / "w");
  }
}

}  // namespace
}  // namespace pb::tuning
