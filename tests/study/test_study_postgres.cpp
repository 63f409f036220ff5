// Studies across machines, with real processes and a real PostgreSQL server
// (tests/tuning/pg_server.h): `playbook study init --store URL` (or the study file's `store`)
// creates the study, workers in their own directories (as on other machines) share the work
// with `study work DIR --store URL` without duplicates, SIGKILLed workers' claims are retried
// (eight workers, two killed), `study migrate` copies a study PostgreSQL -> SQLite ->
// PostgreSQL and SQLite -> PostgreSQL -> SQLite with every record and the tracking-table row
// unchanged, and store errors are one line.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
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
// objective = its index. The first attempt of each `held` trial writes its worker's pid to
// held_INDEX/pid and holds (never ends) until the file `release` exists: a worker killed after
// that file appeared is certainly killed mid-trial.
void write_trial_script(const fs::path& dir, double sleep_s, int trials = 12,
                        const std::vector<int>& held = {}) {
  const std::string ledger = (dir / "ledger.txt").string();
  std::string hold;
  if (!held.empty()) {
    std::string list = " ";
    for (int i : held) list += std::to_string(i) + " ";
    hold = "case \"" + list +
           "\" in *\" $PLAYBOOK_TRIAL_INDEX \"*)\n"
           "  if mkdir " +
           (dir / "held_").string() +
           "$PLAYBOOK_TRIAL_INDEX 2>/dev/null; then\n"
           "    d=" +
           (dir / "held_").string() +
           "$PLAYBOOK_TRIAL_INDEX\n"
           "    echo $PPID > $d/pid.tmp && mv $d/pid.tmp $d/pid\n"
           "    while [ ! -e " +
           (dir / "release").string() +
           " ]; do sleep 0.05; done\n"
           "    exit 3\n"
           "  fi;;\n"
           "esac\n";
  }
  write_file(dir / "trial.sh",
             "#!/bin/sh\n"
             "echo \"start $PLAYBOOK_TRIAL_INDEX $PPID\" >> " +
                 ledger + "\n" + hold + "sleep " + std::to_string(sleep_s) + "\n" +
                 "echo \"{\\\"objective\\\": $PLAYBOOK_TRIAL_INDEX}\" > "
                 "\"$PLAYBOOK_TRIAL_RESULT\"\n"
                 "echo \"end $PLAYBOOK_TRIAL_INDEX $PPID\" >> " +
                 ledger + "\n");
  write_file(dir / "study.toml",
             "name = \"spread\"\nkind = \"command\"\ncommand = [\"sh\", \"trial.sh\"]\n"
             "trials = " +
                 std::to_string(trials) +
                 "\nseed = 3\nretries = 1\n"
                 "[workers]\nheartbeat_s = 0.5\nstale_after_s = 5.0\n"
                 "[search.lr]\nscale = \"log\"\nmin = 1e-4\nmax = 1.0\n");
}

// How many times each trial ended ("end" lines of the ledger), not counting `except`'s.
std::map<int64_t, int> ends_in_ledger(const fs::path& dir, const std::set<pid_t>& except) {
  std::ifstream ledger(dir / "ledger.txt");
  std::map<int64_t, int> ends;
  std::string word;
  int64_t index = 0;
  pid_t pid = 0;
  while (ledger >> word >> index >> pid) {
    if (word == "end" && !except.count(pid)) ++ends[index];
  }
  return ends;
}

// Waits (up to 120 s) until the first attempt of each `held` trial holds, and returns the
// worker holding each (its held_N/pid). Killing a worker as soon as the store shows its claim
// could kill it before its trial started (the retry would then hold), or after it ended.
std::map<int64_t, pid_t> wait_for_holders(const fs::path& dir, const std::vector<int>& held) {
  std::map<int64_t, pid_t> holder;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (holder.size() < held.size() && std::chrono::steady_clock::now() < deadline) {
    for (int index : held) {
      std::ifstream in(dir / ("held_" + std::to_string(index)) / "pid");
      pid_t pid = 0;
      if (in >> pid && pid > 0) holder[index] = pid;
    }
    if (holder.size() < held.size()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return holder;
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
  write_trial_script(tmp.path(), 0.3, 12, {0});
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
  const int64_t killed_index = 0;  // the first trial it claims holds until `release`
  const std::map<int64_t, pid_t> holder = wait_for_holders(tmp.path(), {killed_index});
  ASSERT_EQ(holder.size(), 1u) << read_file(tmp / "doomed_err.txt");
  ASSERT_EQ(holder.at(killed_index), doomed);
  ::kill(doomed, SIGKILL);
  wait_exit(doomed);
  write_file(tmp / "release", "");

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
  const std::map<int64_t, int> ends = ends_in_ledger(tmp.path(), {doomed});
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

// Worker processes that the test kills at its end if they still run (a failed assertion).
struct Workers {
  std::vector<pid_t> pids;
  ~Workers() {
    for (pid_t p : pids) {
      if (p > 0 && ::kill(p, SIGKILL) == 0) wait_exit(p);
    }
  }
  int wait(pid_t p) {
    const int rc = wait_exit(p);
    std::replace(pids.begin(), pids.end(), p, pid_t{0});
    return rc;
  }
};

// Acceptance 2: eight workers finish a 32-trial study, each trial completed exactly once,
// while two of them are SIGKILLed mid-trial. Trials 5 and 20 hold on their first attempt, so
// the workers running them are killed while they hold running claims, whatever the machine's
// load; their claims return to pending and one of the six others runs them again.
TEST(StudyPostgres, EightWorkersFinish32TrialsWhileTwoAreKilledMidTrial) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const std::string url = pg.new_database();
  TempDir tmp("pb_study_pg8");
  const std::vector<int> held = {5, 20};
  write_trial_script(tmp.path(), 0.25, 32, held);
  const auto init = run_playbook({"study", "init", (tmp / "study.toml").string(), "--dir",
                                  (tmp / "origin").string(), "--store", url},
                                 tmp / "init");
  ASSERT_EQ(init.exit_code, 0) << init.err;

  Workers workers;
  std::map<pid_t, std::string> name_of;
  for (int w = 0; w < 8; ++w) {
    const std::string name = "w" + std::to_string(w);
    const pid_t pid = spawn_playbook({"study", "work", (tmp / name).string(), "--store", url},
                                     tmp / (name + "_out.txt"), tmp / (name + "_err.txt"));
    workers.pids.push_back(pid);
    name_of[pid] = name;
  }
  // Wait until both held trials hold: their workers are the doomed ones.
  const std::map<int64_t, pid_t> holder = wait_for_holders(tmp.path(), held);
  ASSERT_EQ(holder.size(), held.size()) << "the held trials never started";
  for (const TrialRecord& t : open_store(url)->trials()) {
    if (holder.count(t.index)) {
      EXPECT_EQ(t.status, TrialStatus::Running) << "trial " << t.index;
      EXPECT_EQ(pid_of_worker(t.worker), holder.at(t.index)) << "trial " << t.index;
    }
  }
  std::set<pid_t> doomed;
  for (const auto& [index, pid] : holder) {
    ASSERT_TRUE(name_of.count(pid)) << "trial " << index << " held by " << pid;
    doomed.insert(pid);
  }
  ASSERT_EQ(doomed.size(), 2u);
  for (pid_t pid : doomed) {
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    EXPECT_EQ(workers.wait(pid), -SIGKILL);
  }
  write_file(tmp / "release", "");  // held trials of later attempts run through

  std::set<pid_t> survivors;
  for (pid_t pid : workers.pids) {
    if (pid == 0) continue;
    survivors.insert(pid);
    const std::string name = name_of[pid];
    EXPECT_EQ(workers.wait(pid), 0) << name << ": " << read_file(tmp / (name + "_err.txt"));
  }
  ASSERT_EQ(survivors.size(), 6u);

  std::string logs;  // every worker's log and its trials' logs, for failure messages
  for (const auto& [pid, name] : name_of) {
    logs += "\n== " + name + " (" + std::to_string(pid) + "):\n" +
            read_file(tmp / (name + "_out.txt")) + read_file(tmp / (name + "_err.txt"));
  }
  const auto trials = open_store(url)->trials();
  ASSERT_EQ(trials.size(), 32u);
  for (const TrialRecord& t : trials) {
    const bool killed = holder.count(t.index) > 0;
    EXPECT_EQ(t.status, TrialStatus::Completed) << "trial " << t.index << ": " << t.reason;
    ASSERT_TRUE(t.objective.has_value()) << "trial " << t.index;
    EXPECT_EQ(*t.objective, static_cast<double>(t.index));
    EXPECT_EQ(t.attempts, killed ? 2 : 1) << "trial " << t.index << logs;
    EXPECT_EQ(t.failures, 0) << "a lost claim is not a failure: trial " << t.index;
    if (killed) {
      EXPECT_TRUE(survivors.count(pid_of_worker(t.worker)))
          << "trial " << t.index << " ended by " << t.worker;
    }
  }
  // Each trial ended exactly once (the killed workers' trials before the kill included), and
  // the killed claims ended in one of the six others.
  const std::map<int64_t, int> ends = ends_in_ledger(tmp.path(), {});
  ASSERT_EQ(ends.size(), 32u);
  for (const auto& [i, n] : ends) EXPECT_EQ(n, 1) << "trial " << i << " ended " << n << " times";
  const std::map<int64_t, int> survivor_ends = ends_in_ledger(tmp.path(), doomed);
  for (const auto& [index, pid] : holder) EXPECT_EQ(survivor_ends.count(index), 1u) << index;
}

// The study file's `store` key stands in for --store: `study init` and `study run` bind the
// study directory to it (so `study work DIR` needs no --store), --store wins over it, and a bad
// value is a one-line error naming the key before anything is created.
TEST(StudyPostgres, TheStudyFilesStoreKeySelectsTheStore) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const std::string url = pg.new_database(), other = pg.new_database();
  TempDir tmp("pb_study_pg_key");
  write_trial_script(tmp.path(), 0.05, 4);
  const std::string spec = read_file(tmp / "study.toml");
  write_file(tmp / "study.toml", "store = \"" + url + "\"\n" + spec);

  const auto init = run_playbook(
      {"study", "init", (tmp / "study.toml").string(), "--dir", (tmp / "a").string()}, tmp / "i");
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_EQ(study_store_location(tmp / "a"), url);
  EXPECT_FALSE(fs::exists(tmp / "a" / "study.db"));
  const auto work = run_playbook({"study", "work", (tmp / "a").string()}, tmp / "w");
  ASSERT_EQ(work.exit_code, 0) << work.err;
  ASSERT_TRUE(open_store(url)->study().has_value());
  EXPECT_EQ(count_trials(open_store(url)->trials()).completed, 4);

  // `study run` with the key: the finished study, found in the key's store.
  const auto run = run_playbook(
      {"study", "run", (tmp / "study.toml").string(), "--dir", (tmp / "b").string()}, tmp / "r");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(study_store_location(tmp / "b"), url);
  EXPECT_NE(run.out.find("4 completed"), std::string::npos) << run.out;

  // --store wins over the key.
  const auto over = run_playbook({"study", "init", (tmp / "study.toml").string(), "--dir",
                                  (tmp / "c").string(), "--store", other},
                                 tmp / "o");
  ASSERT_EQ(over.exit_code, 0) << over.err;
  EXPECT_EQ(study_store_location(tmp / "c"), other);
  EXPECT_EQ(open_store(other)->trials().size(), 4u);

  // A bad value: one line naming the file and the key, exit 2, nothing created.
  write_file(tmp / "bad.toml", "store = \"mysql://me:hunter2@h/db\"\n" + spec);
  const auto bad = run_playbook(
      {"study", "init", (tmp / "bad.toml").string(), "--dir", (tmp / "d").string()}, tmp / "x");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err.rfind("playbook: error: ", 0), 0u) << bad.err;
  EXPECT_EQ(bad.err.find('\n'), bad.err.size() - 1) << bad.err;
  EXPECT_NE(bad.err.find("bad.toml: store: unknown scheme 'mysql://'"), std::string::npos)
      << bad.err;
  EXPECT_EQ(bad.err.find("hunter2"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(tmp / "d"));
}

// Every field of a record, for comparisons that print both sides.
auto fields(const TrialRecord& t) {
  return std::tie(t.index, t.params_json, t.status, t.reason, t.worker, t.heartbeat, t.attempts,
                  t.failures, t.run_dir, t.objective, t.best_step, t.metrics_json, t.started,
                  t.finished);
}
auto fields(const StudyRecord& s) {
  return std::tie(s.name, s.spec_text, s.spec_file, s.origin_dir, s.notes, s.created,
                  s.total_trials);
}

// Acceptance 4: a finished SQLite study (completed trials with best steps and metrics, an
// infeasible one, one that failed once then completed, one that failed for good, notes)
// migrated SQLite -> PostgreSQL -> SQLite has every field of the study and of every trial, and
// its tracking-table row, unchanged.
TEST(StudyPostgres, MigratingSqliteToPostgresAndBackKeepsEveryRecord) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  TempDir tmp("pb_study_pg_mig");
  const std::string marker = (tmp / "failed_once").string();
  write_file(tmp / "trial.sh",
             "#!/bin/sh\n"
             "i=$PLAYBOOK_TRIAL_INDEX\n"
             "case $i in\n"
             "  1) echo '{\"status\": \"infeasible\", \"reason\": \"too large\"}' > "
             "\"$PLAYBOOK_TRIAL_RESULT\"; exit 0;;\n"
             "  2) mkdir " +
                 marker +
                 " 2>/dev/null && { echo 'crashed once'; exit 1; };;\n"
                 "  3) echo 'always crashes'; exit 7;;\n"
                 "esac\n"
                 "echo \"{\\\"objective\\\": 0.$i, \\\"best_step\\\": $((i * 10)), "
                 "\\\"metrics\\\": {\\\"loss\\\": 1.$i}}\" > \"$PLAYBOOK_TRIAL_RESULT\"\n");
  write_file(tmp / "study.toml",
             "name = \"roundtrip\"\nnotes = \"lr sweep\"\nkind = \"command\"\n"
             "command = [\"sh\", \"trial.sh\"]\ntrials = 6\nseed = 1\nretries = 1\n"
             "[search.lr]\nscale = \"log\"\nmin = 1e-4\nmax = 1.0\n"
             "[search.opt]\nvalues = [\"sgd\", \"adam\"]\n");
  const fs::path origin = tmp / "studies" / "roundtrip";
  const auto run = run_playbook(
      {"study", "run", (tmp / "study.toml").string(), "--dir", origin.string(), "--workers", "2"},
      tmp / "run");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  ASSERT_EQ(
      run_playbook({"study", "note", origin.string(), "for the round trip", "--append"}, tmp / "n")
          .exit_code,
      0);

  const std::string pg_url = pg.new_database(), back = (tmp / "back.db").string();
  for (const auto& [src, dst] : {std::pair{origin.string(), pg_url}, std::pair{pg_url, back}}) {
    const auto m = run_playbook({"study", "migrate", src, dst}, tmp / "migrate");
    ASSERT_EQ(m.exit_code, 0) << m.err;
    EXPECT_NE(m.out.find("6 trials copied"), std::string::npos) << m.out;
  }

  const auto source = open_store((origin / "study.db").string());
  const auto x = source->trials();
  ASSERT_EQ(x.size(), 6u);
  const StudyCounts c = count_trials(x);
  EXPECT_EQ(c.completed, 4);  // trial 2 after one failure
  EXPECT_EQ(c.infeasible, 1);
  EXPECT_EQ(c.failed, 1);
  EXPECT_EQ(x[2].failures, 1);
  EXPECT_EQ(x[3].failures, 2);
  EXPECT_EQ(x[1].reason, "too large");
  EXPECT_EQ(x[4].best_step, 40);
  EXPECT_EQ(x[4].metrics_json, "{\"loss\":1.4}");
  EXPECT_EQ(source->study()->notes, "lr sweep; for the round trip");
  for (const std::string& copy : {pg_url, back}) {
    SCOPED_TRACE(copy == back ? "the SQLite copy" : "the PostgreSQL copy");
    const auto store = open_store(copy);
    ASSERT_TRUE(store->study().has_value());
    EXPECT_EQ(fields(*source->study()), fields(*store->study()));
    const auto y = store->trials();
    ASSERT_EQ(x.size(), y.size());
    for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(fields(x[i]), fields(y[i]));
  }

  // The tracking table: the original directory's row, then the same directory bound to the
  // final copy instead, in every format.
  std::vector<std::string> before;
  for (const char* format : {"text", "csv"}) {
    const auto t =
        run_playbook({"studies", (tmp / "studies").string(), "--format", format}, tmp / "table");
    EXPECT_EQ(t.exit_code, 0) << t.err;
    EXPECT_TRUE(t.err.empty()) << t.err;
    EXPECT_NE(t.out.find("roundtrip"), std::string::npos) << t.out;
    before.push_back(t.out);
  }
  fs::rename(origin, tmp / "original");
  bind_study_store(origin, back);
  ASSERT_EQ(study_store_location(origin), back);
  std::size_t k = 0;
  for (const char* format : {"text", "csv"}) {
    const auto t =
        run_playbook({"studies", (tmp / "studies").string(), "--format", format}, tmp / "table");
    EXPECT_EQ(t.exit_code, 0) << t.err;
    EXPECT_EQ(t.out, before[k++]);
  }
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
