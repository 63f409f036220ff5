// Studies end to end, with real processes: `playbook study run` starting workers that run
// trials as children. Command trials (a shell script with a known objective) check the Halton
// points and the best trial; SIGKILLs of the runner, a worker and a trial child at random
// moments check that no trial is lost or duplicated and that deterministic `playbook train`
// trials resumed from checkpoints give bitwise the objectives of an uninterrupted study;
// divergence, invalid combinations and crashes are recorded, never stop the study; two runners
// share a study; bad study files are one-line errors before anything starts.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/cli_runner.h"
#include "tuning/quasi_random.h"
#include "tuning/study.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;
using pb::testing::CliResult;
using pb::testing::read_file;
using pb::testing::run_playbook;
using pb::testing::spawn_playbook;
using pb::testing::TempDir;
using pb::testing::wait_exit;
using pb::testing::write_file;

const fs::path kRepo = fs::path(PLAYBOOK_SOURCE_DIR);

// The test objective: f(lr, momentum, width) = (log10 lr + 2)^2 + 10 (1 - momentum) +
// (width - 0.5)^2, written by a POSIX shell + awk script that also logs each start and end (with
// the worker's pid) to a ledger. FAIL_INDEX (when >= 0) always exits 1.
void write_objective_script(const fs::path& dir, double sleep_s, int fail_index = -1) {
  std::ostringstream s;
  s << "#!/bin/sh\n"
    // A run finding the lock of a live run of the same trial logs "dup" (zombies are dead).
    << "lock=" << (dir / "lock_").string() << "$PLAYBOOK_TRIAL_INDEX\n"
    << "if [ -f \"$lock\" ]; then other=$(cat \"$lock\"); "
       "state=$(sed 's/.*) //' /proc/$other/stat 2>/dev/null | cut -c1); "
       "if [ -n \"$state\" ] && [ \"$state\" != Z ]; then "
       "echo \"dup $PLAYBOOK_TRIAL_INDEX $PPID\" >> "
    << (dir / "ledger.txt") << "; fi; fi\n"
    << "echo $$ > \"$lock\"\n"
    << "echo \"start $PLAYBOOK_TRIAL_INDEX $PPID\" >> " << (dir / "ledger.txt") << "\n"
    << "sleep " << sleep_s << "\n"
    << "if [ \"$PLAYBOOK_TRIAL_INDEX\" = \"" << fail_index
    << "\" ]; then echo boom >&2; exit 1; fi\n"
    << "awk -v out=\"$PLAYBOOK_TRIAL_RESULT\" '{ gsub(/[{}\"]/, \"\"); n = split($0, kv, \",\");\n"
    << "  for (i = 1; i <= n; i++) { split(kv[i], p, \":\"); v[p[1]] = p[2] + 0 }\n"
    << "  obj = (log(v[\"lr\"]) / log(10) + 2) ^ 2 + (1 - v[\"momentum\"]) * 10 + (v[\"width\"] - "
       "0.5) ^ 2\n"
    << "  printf \"{\\\"objective\\\": %.17g, \\\"metrics\\\": {\\\"w\\\": %.17g}}\\n\", obj, "
       "v[\"width\"] > out }' \"$PLAYBOOK_TRIAL_PARAMS\"\n"
    << "rm -f \"$lock\"\n"
    << "echo \"end $PLAYBOOK_TRIAL_INDEX $PPID\" >> " << (dir / "ledger.txt") << "\n";
  write_file(dir / "objective.sh", s.str());
}

std::string command_study(int trials, int seed, int retries = 2) {
  return "name = \"quadratic\"\nkind = \"command\"\ncommand = [\"sh\", \"objective.sh\"]\n"
         "trials = " +
         std::to_string(trials) + "\nseed = " + std::to_string(seed) +
         "\nretries = " + std::to_string(retries) + R"(
[workers]
heartbeat_s = 0.5
stale_after_s = 5.0
[search.lr]
scale = "log"
min = 1e-4
max = 1.0
[search.momentum]
scale = "reverse_log"
min = 0.5
max = 0.999
[search.width]
scale = "linear"
min = 0.0
max = 1.0
)";
}

double objective_of(double lr, double momentum, double width) {
  return std::pow(std::log(lr) / std::log(10.0) + 2, 2) + (1 - momentum) * 10 +
         std::pow(width - 0.5, 2);
}

std::map<std::string, double> numeric_params(const TrialRecord& t) {
  std::map<std::string, double> out;
  for (const auto& [k, v] : params_of(t)) out[k] = std::stod(v);
  return out;
}

// Direct children of pid, from /proc.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const std::size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

int run_study(const fs::path& dir, const std::vector<std::string>& extra, const fs::path& scratch,
              std::string* out = nullptr) {
  std::vector<std::string> args = {"study", "run", (dir / "study.toml").string(), "--dir",
                                   (dir / "st").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  const CliResult r = run_playbook(args, scratch);
  if (out) *out = r.out + r.err;
  return r.exit_code;
}

// Runs the study with 3 workers and SIGKILLs, at random moments, the runner, a worker or a
// trial child (in turn; with after_checkpoint, a train trial that has written a checkpoint),
// restarting the runner when it was killed. Returns how many kills hit something.
// The --out argument of a `playbook train` process, from /proc; empty when it has none.
fs::path out_dir_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--out") return args[i + 1];
  }
  return {};
}

// Whether `dir` holds a checkpoint that was renamed into place (step_N without .tmp).
bool has_complete_checkpoint(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("step_") && name.find('.') == std::string::npos) return true;
  }
  return false;
}

int run_with_kills(const fs::path& dir, int kills, unsigned seed, double min_s, double max_s,
                   bool after_checkpoint = false) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> wait(min_s, max_s);
  int hit = 0;
  int k = 0;
  while (k < kills) {
    const pid_t runner = spawn_playbook({"study", "run", (dir / "study.toml").string(), "--dir",
                                         (dir / "st").string(), "--workers", "3"},
                                        dir / "runner_out.txt", dir / "runner_err.txt");
    bool runner_alive = true;
    while (runner_alive && k < kills) {
      std::this_thread::sleep_for(std::chrono::duration<double>(wait(rng)));
      const int what = k % 3;  // 0: runner, 1: a worker, 2: a trial child
      ++k;
      if (what == 0) {
        if (kill(runner, SIGKILL) == 0) ++hit;
        wait_exit(runner);
        runner_alive = false;
        break;
      }
      std::vector<pid_t> workers = children_of(runner);
      if (workers.empty()) continue;
      const pid_t worker = workers[rng() % workers.size()];
      if (what == 1) {
        if (kill(worker, SIGKILL) == 0) ++hit;
        continue;
      }
      if (!after_checkpoint) {
        std::vector<pid_t> trials = children_of(worker);
        if (!trials.empty() && kill(trials.front(), SIGKILL) == 0) ++hit;
        continue;
      }
      // Train trials: kill one once its run has a complete checkpoint (checkpoints/step_N, not a
      // step_N.tmp still being written), so it resumes from it. The wait is long because a loaded
      // machine may take many seconds to reach the first checkpoint.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      bool killed = false;
      while (!killed && std::chrono::steady_clock::now() < deadline) {
        for (const pid_t w : children_of(runner)) {
          for (const pid_t trial : children_of(w)) {
            const fs::path out = out_dir_of(trial);
            std::error_code ec;
            if (!out.empty() && has_complete_checkpoint(out / "checkpoints") &&
                kill(trial, SIGKILL) == 0) {
              ++hit;
              killed = true;
              break;
            }
          }
          if (killed) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (runner_alive) {
      kill(runner, SIGKILL);
      wait_exit(runner);
    }
  }
  return hit;
}

// ---- acceptance 1: Halton points and the best trial ------------------------------------------

TEST(StudyE2E, CommandTrialsAreTheHaltonPointsAndTheBestIsFound) {
  TempDir tmp("pb_study_halton");
  write_objective_script(tmp.path(), 0.05);
  write_file(tmp / "study.toml", command_study(16, 5));
  std::string out;
  ASSERT_EQ(run_study(tmp.path(), {"--workers", "3"}, tmp / "scratch", &out), 0) << out;
  const Study study = load_study(tmp / "st");
  ASSERT_EQ(study.trials.size(), 16u);
  const HaltonSequence halton(3, HaltonOptions{.seed = 5});
  int64_t best = -1;
  double best_value = INFINITY;
  for (const TrialRecord& t : study.trials) {
    ASSERT_EQ(t.status, TrialStatus::Completed) << t.index << ": " << t.reason;
    EXPECT_EQ(t.attempts, 1);
    const std::vector<double> u = halton.point(static_cast<uint64_t>(t.index));
    const auto p = numeric_params(t);
    ASSERT_EQ(p.size(), 3u);
    // Parameters are the sampler's points mapped on each scale (exact: JSON keeps doubles).
    EXPECT_EQ(p.at("lr"), map_unit(Dimension{"lr", Dimension::Scale::Log, 1e-4, 1.0}, u[0]));
    EXPECT_EQ(p.at("momentum"),
              map_unit(Dimension{"momentum", Dimension::Scale::ReverseLog, 0.5, 0.999}, u[1]));
    EXPECT_EQ(p.at("width"), map_unit(Dimension{"width", Dimension::Scale::Linear, 0, 1}, u[2]));
    EXPECT_DOUBLE_EQ(p.at("lr"), std::exp(std::lerp(std::log(1e-4), 0.0, u[0])));
    const double f = objective_of(p.at("lr"), p.at("momentum"), p.at("width"));
    ASSERT_TRUE(t.objective);
    EXPECT_NEAR(*t.objective, f, 1e-9);
    EXPECT_NE(t.metrics_json.find("\"w\""), std::string::npos);
    if (f < best_value) {
      best_value = f;
      best = t.index;
    }
  }
  const TrialRecord* found = best_trial(study);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->index, best);
  const CliResult b = run_playbook({"study", "best", (tmp / "st").string()}, tmp / "scratch");
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.out.find("best trial " + std::to_string(best) + ":"), std::string::npos) << b.out;
  const CliResult csv = run_playbook({"study", "export", (tmp / "st").string()}, tmp / "scratch");
  EXPECT_EQ(csv.out.rfind("index,lr,momentum,width,status,reason,objective,best_step,run_dir\n", 0),
            0u)
      << csv.out;
  EXPECT_EQ(std::count(csv.out.begin(), csv.out.end(), '\n'), 17);
  // The same directory with a changed study file is refused, not mixed.
  write_file(tmp / "study.toml", command_study(16, 6));
  const CliResult changed =
      run_playbook({"study", "run", (tmp / "study.toml").string(), "--dir", (tmp / "st").string()},
                   tmp / "scratch");
  EXPECT_EQ(changed.exit_code, 1);
  EXPECT_NE(changed.err.find("holds a study made from a different study file"), std::string::npos)
      << changed.err;
  EXPECT_EQ(load_study(tmp / "st").spec.seed, 5u);
  const CliResult table =
      run_playbook({"studies", tmp.path().string(), "--format", "csv"}, tmp / "scratch");
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("quadratic"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(",16,16,0,0,"), std::string::npos) << table.out;
}

// ---- acceptance 2: crash safety ---------------------------------------------------------------

TEST(StudyE2E, KillsOfRunnerWorkersAndTrialsLoseAndDuplicateNothing) {
  TempDir tmp("pb_study_kills");
  write_objective_script(tmp.path(), 0.4);
  write_file(tmp / "study.toml", command_study(24, 3, /*retries=*/50));
  const int hit = run_with_kills(tmp.path(), 9, 1234, 0.3, 1.2);
  EXPECT_GE(hit, 3);
  std::string out;
  ASSERT_EQ(run_study(tmp.path(), {"--workers", "3"}, tmp / "scratch", &out), 0) << out;
  const Study study = load_study(tmp / "st");
  ASSERT_EQ(study.trials.size(), 24u);
  std::set<int64_t> indices;
  int attempts = 0;
  for (const TrialRecord& t : study.trials) {
    indices.insert(t.index);
    attempts += t.attempts;
    ASSERT_EQ(t.status, TrialStatus::Completed) << t.index << ": " << t.reason;
    const auto p = numeric_params(t);
    ASSERT_TRUE(t.objective);
    EXPECT_NEAR(*t.objective, objective_of(p.at("lr"), p.at("momentum"), p.at("width")), 1e-9);
  }
  EXPECT_EQ(indices.size(), 24u);
  EXPECT_EQ(*indices.begin(), 0);
  EXPECT_EQ(*indices.rbegin(), 23);
  EXPECT_GT(attempts, 24) << "no trial was interrupted: the kills hit nothing";
  // No trial ever ran twice at the same time: no run found a live run of its trial holding the
  // trial's lock, and every trial ran to its end at least once.
  std::ifstream ledger(tmp / "ledger.txt");
  std::map<int64_t, int> ends;
  std::string word;
  int64_t index = 0;
  pid_t worker = 0;
  while (ledger >> word >> index >> worker) {
    EXPECT_NE(word, "dup") << "trial " << index << " ran twice at once";
    if (word == "end") ++ends[index];
  }
  EXPECT_EQ(ends.size(), 24u);
}

// Deterministic CPU training trials: objectives after kills equal those of an uninterrupted run.
std::string train_study(const std::string& name) {
  return "name = \"" + name + "\"\nbase = \"" +
         (kRepo / "configs/mlp_fashion_mnist.toml").string() +
         R"("
trials = 6
seed = 2
retries = 50
[workers]
heartbeat_s = 0.5
stale_after_s = 5.0
[fixed]
train.deterministic = true
train.max_train_steps = 160
train.eval_every = 20
train.log_every = 10
train.checkpoint_every = 20
train.batch_size = 32
train.eval_batch_size = 500
data.train_examples = 1500
data.validation_size = 500
data.workers = 0
# 1 ms per example (32 ms a step, about 5 s a trial, however fast the machine): the kills must
# find trials running past a checkpoint; the delay changes no result.
data.example_delay_us = 1000
model.hidden = [32]
[search.optimizer.learning_rate]
scale = "log"
min = 0.01
max = 0.5
[search.optimizer.momentum]
scale = "reverse_log"
min = 0.5
max = 0.99
)";
}

TEST(StudyE2E, KilledTrainTrialsResumeToBitwiseTheSameObjectives) {
  TempDir clean("pb_study_train_clean");
  write_file(clean / "study.toml", train_study("mlp_clean"));
  std::string out;
  ASSERT_EQ(
      run_study(clean.path(), {"--workers", "3", "--devices", "cpu"}, clean / "scratch", &out), 0)
      << out;
  TempDir killed("pb_study_train_killed");
  write_file(killed / "study.toml", train_study("mlp_clean"));
  const int hit = run_with_kills(killed.path(), 6, 99, 0.5, 1.5, /*after_checkpoint=*/true);
  EXPECT_GE(hit, 4);
  ASSERT_EQ(
      run_study(killed.path(), {"--workers", "3", "--devices", "cpu"}, killed / "scratch", &out), 0)
      << out;
  const Study a = load_study(clean / "st");
  const Study b = load_study(killed / "st");
  ASSERT_EQ(a.trials.size(), 6u);
  ASSERT_EQ(b.trials.size(), 6u);
  int resumed = 0;
  for (std::size_t i = 0; i < 6; ++i) {
    ASSERT_EQ(a.trials[i].status, TrialStatus::Completed) << a.trials[i].reason;
    ASSERT_EQ(b.trials[i].status, TrialStatus::Completed) << b.trials[i].reason;
    EXPECT_EQ(a.trials[i].params_json, b.trials[i].params_json);
    ASSERT_TRUE(a.trials[i].objective && b.trials[i].objective);
    EXPECT_EQ(*a.trials[i].objective, *b.trials[i].objective) << "trial " << i;  // bitwise
    EXPECT_EQ(a.trials[i].best_step, b.trials[i].best_step);
    const std::string log = read_file(killed / "st" / b.trials[i].run_dir / "trial.log");
    if (log.find("resumed from") != std::string::npos) ++resumed;
    // The worker's share of the cores reaches the trial's own kernel threads, not only OpenBLAS.
    EXPECT_NE(log.find(" --threads "), std::string::npos) << "trial " << i << ": " << log;
  }
  EXPECT_GE(resumed, 1) << "no killed trial resumed from its checkpoint";
  std::cout << "kills that hit: " << hit << ", trials resumed from a checkpoint: " << resumed
            << "\n";
}

// ---- acceptance 3: infeasible and failed trials ----------------------------------------------

TEST(StudyE2E, DivergenceInvalidCombinationsAndCrashesAreRecorded) {
  TempDir tmp("pb_study_infeasible");
  write_file(tmp / "study.toml", "name = \"bad_points\"\nbase = \"" +
                                     (kRepo / "configs/mlp_fashion_mnist.toml").string() + R"("
trials = 4
[fixed]
train.max_train_steps = 40
train.eval_every = 20
train.log_every = 5
train.checkpoint_every = 20
train.batch_size = 64
data.train_examples = 1000
data.validation_size = 500
model.hidden = [32]
model.norm = "ghost"
[search.optimizer.learning_rate]
values = [0.05, 1000.0]
[search.model.virtual_batch_size]
values = [16, 24]
)");
  std::string out;
  ASSERT_EQ(run_study(tmp.path(), {"--workers", "2"}, tmp / "scratch", &out), 0) << out;
  const Study study = load_study(tmp / "st");
  int diverged = 0, invalid = 0, completed = 0;
  for (const TrialRecord& t : study.trials) {
    const auto p = params_of(t);
    const bool big_lr = p[0].second == "1000";
    const bool bad_batch = p[1].second == "24";
    if (bad_batch) {
      EXPECT_EQ(t.status, TrialStatus::Infeasible);
      EXPECT_NE(t.reason.find("train.batch_size (64) must be a multiple of "
                              "model.virtual_batch_size (24)"),
                std::string::npos)
          << t.reason;
      EXPECT_FALSE(fs::exists(tmp / "st" / t.run_dir / "run" / "config.toml"));
      ++invalid;
    } else if (big_lr) {
      EXPECT_EQ(t.status, TrialStatus::Infeasible);
      EXPECT_EQ(t.reason.rfind("diverged at step ", 0), 0u) << t.reason;
      // The step is the one summary.json reports.
      const std::string summary = read_file(tmp / "st" / t.run_dir / "run" / "summary.json");
      EXPECT_NE(summary.find("\"steps\": " + t.reason.substr(17)), std::string::npos) << summary;
      ++diverged;
    } else {
      EXPECT_EQ(t.status, TrialStatus::Completed) << t.reason;
      EXPECT_TRUE(t.objective && *t.objective > 0 && *t.objective < 1);
      ++completed;
    }
  }
  EXPECT_GE(diverged, 1);
  EXPECT_GE(invalid, 1);
  const CliResult csv = run_playbook({"study", "export", (tmp / "st").string()}, tmp / "scratch");
  EXPECT_NE(csv.out.find(",infeasible,diverged at step "), std::string::npos) << csv.out;
  EXPECT_NE(csv.out.find(",trials/0000/run\n"), std::string::npos) << csv.out;
  EXPECT_GE(completed, 1);

  TempDir cmd("pb_study_crash");
  write_objective_script(cmd.path(), 0.0, /*fail_index=*/2);
  write_file(cmd / "study.toml", command_study(5, 1, /*retries=*/2));
  ASSERT_EQ(run_study(cmd.path(), {"--workers", "2"}, cmd / "scratch", &out), 0) << out;
  const Study crashed = load_study(cmd / "st");
  for (const TrialRecord& t : crashed.trials) {
    if (t.index == 2) {
      EXPECT_EQ(t.status, TrialStatus::Failed);
      EXPECT_EQ(t.failures, 3);  // the first run and 2 retries
      EXPECT_EQ(t.attempts, 3);
      EXPECT_NE(t.reason.find("exit code 1: boom"), std::string::npos) << t.reason;
    } else {
      EXPECT_EQ(t.status, TrialStatus::Completed) << t.reason;
    }
  }
}

// ---- acceptance 4: two runners ----------------------------------------------------------------

TEST(StudyE2E, TwoRunnersShareTheWorkWithoutDuplicates) {
  TempDir tmp("pb_study_two");
  write_objective_script(tmp.path(), 0.2);
  write_file(tmp / "study.toml", command_study(20, 9));
  const std::vector<std::string> args = {
      "study",     "run", (tmp / "study.toml").string(), "--dir", (tmp / "st").string(),
      "--workers", "2"};
  const pid_t a = spawn_playbook(args, tmp / "a_out.txt", tmp / "a_err.txt");
  const pid_t b = spawn_playbook(args, tmp / "b_out.txt", tmp / "b_err.txt");
  EXPECT_EQ(wait_exit(a), 0) << read_file(tmp / "a_err.txt");
  EXPECT_EQ(wait_exit(b), 0) << read_file(tmp / "b_err.txt");
  const Study study = load_study(tmp / "st");
  ASSERT_EQ(study.trials.size(), 20u);
  for (const TrialRecord& t : study.trials) {
    EXPECT_EQ(t.status, TrialStatus::Completed);
    EXPECT_EQ(t.attempts, 1) << "trial " << t.index;
  }
  std::ifstream ledger(tmp / "ledger.txt");
  std::map<int64_t, int> starts;
  std::set<pid_t> workers;
  std::string word;
  int64_t index = 0;
  pid_t worker = 0;
  while (ledger >> word >> index >> worker) {
    if (word == "start") ++starts[index];
    workers.insert(worker);
  }
  ASSERT_EQ(starts.size(), 20u);
  for (const auto& [i, n] : starts) EXPECT_EQ(n, 1) << "trial " << i << " ran " << n << " times";
  EXPECT_GT(workers.size(), 2u) << "the workers of both runners took trials";
}

// ---- Ctrl-C ------------------------------------------------------------------------------------

// Waits until `n` trials of the study run (the store exists once the runner created it).
bool wait_running(const fs::path& study_dir, int n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(study_dir / "study.db")) {
      try {
        if (count_trials(load_study(study_dir).trials).running >= n) return true;
      } catch (const std::exception&) {
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(StudyE2E, CtrlCLetsRunningTrialsFinishAndARerunResumes) {
  TempDir tmp("pb_study_sigint");
  write_objective_script(tmp.path(), 3.0);
  write_file(tmp / "study.toml", command_study(6, 4));
  const std::vector<std::string> args = {
      "study",     "run", (tmp / "study.toml").string(), "--dir", (tmp / "st").string(),
      "--workers", "2"};
  // One Ctrl-C: no new trials; the two running ones complete.
  pid_t runner = spawn_playbook(args, tmp / "out1.txt", tmp / "err1.txt");
  ASSERT_TRUE(wait_running(tmp / "st", 2));
  kill(runner, SIGINT);
  EXPECT_EQ(wait_exit(runner), 130) << read_file(tmp / "err1.txt");
  EXPECT_NE(read_file(tmp / "out1.txt").find("run the same command again to resume"),
            std::string::npos);
  StudyCounts c = count_trials(load_study(tmp / "st").trials);
  EXPECT_EQ(c.completed, 2);
  EXPECT_EQ(c.running, 0);
  EXPECT_EQ(c.failed, 0);
  EXPECT_EQ(c.pending, 4);
  // Two Ctrl-Cs: the running trials are stopped at once and given back.
  runner = spawn_playbook(args, tmp / "out2.txt", tmp / "err2.txt");
  ASSERT_TRUE(wait_running(tmp / "st", 2));
  const auto t0 = std::chrono::steady_clock::now();
  kill(runner, SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(runner, SIGINT);
  EXPECT_EQ(wait_exit(runner), 130) << read_file(tmp / "err2.txt");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2500))
      << "the second Ctrl-C did not stop the 3 s trials";
  c = count_trials(load_study(tmp / "st").trials);
  EXPECT_EQ(c.completed, 2);
  EXPECT_EQ(c.running, 0);
  EXPECT_EQ(c.pending, 4);
  // The same command again finishes the study; given-back trials count no attempt.
  std::string out;
  ASSERT_EQ(run_study(tmp.path(), {"--workers", "2"}, tmp / "scratch", &out), 0) << out;
  for (const TrialRecord& t : load_study(tmp / "st").trials) {
    EXPECT_EQ(t.status, TrialStatus::Completed);
    EXPECT_EQ(t.attempts, 1) << "trial " << t.index;
  }
}

// ---- acceptance 5: bad study files -----------------------------------------------------------

TEST(StudyE2E, BadStudyFilesAreOneLineErrorsBeforeAnyTrial) {
  TempDir tmp("pb_study_badfiles");
  const std::string head =
      "base = \"" + (kRepo / "configs/mlp_fashion_mnist.toml").string() + "\"\ntrials = 4\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[search.optimizer.learing_rate]\nscale = \"log\"\nmin = 0.01\nmax = 1.0\n",
       "study.toml: search.optimizer.learing_rate: unknown key (did you mean "
       "'optimizer.learning_rate'?)"},
      {"[search.optimizer.learning_rate]\nscale = \"logarithmic\"\nmin = 0.01\nmax = 1.0\n",
       "study.toml: search.optimizer.learning_rate.scale: 'logarithmic' is not one of linear, "
       "log, reverse_log"},
      {"[search.optimizer.learning_rate]\nmin = 0.5\nmax = 0.1\n",
       "study.toml: search.optimizer.learning_rate: empty range: min 0.5 must be below max 0.1"},
      {"[search.optimizer.name]\nvalues = []\n",
       "study.toml: search.optimizer.name.values: categorical with no values"},
      {"[search.optimizer.beta2]\nscale = \"reverse_log\"\nmin = 0.9\nmax = 0.999\n",
       "study.toml: search.optimizer.beta2: optimizer.beta2 does not apply to optimizer "
       "'momentum'"},
      {"[search.optimizer.momentum]\nmin = 0.5\nmax = 1.5\n",
       "study.toml: search.optimizer.momentum: max 1.5 is out of range"},
      {"[search.optimizer.learning_rate]\nscale = \"log\"\nmin = 0.0\nmax = 1.0\n",
       "study.toml: search.optimizer.learning_rate: log scale needs min > 0"},
  };
  for (const auto& [body, expected] : cases) {
    write_file(tmp / "study.toml", head + body);
    const CliResult r = run_playbook(
        {"study", "run", (tmp / "study.toml").string(), "--dir", (tmp / "st").string()},
        tmp / "scratch");
    EXPECT_EQ(r.exit_code, 2) << body;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("playbook: error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos)
        << "expected: " << expected << "\ngot: " << r.err;
    EXPECT_FALSE(fs::exists(tmp / "st")) << "a study directory was created for: " << body;
  }
}

// ---- the examples ------------------------------------------------------------------------------

TEST(StudyE2E, ExampleStudiesValidate) {
  TempDir tmp("pb_study_examples");
  for (const char* file : {"configs/study_mlp_lr_momentum.toml", "configs/study_resnet20.toml"}) {
    const CliResult r = run_playbook({"study", "plan", (kRepo / file).string()}, tmp / "scratch");
    EXPECT_EQ(r.exit_code, 0) << file << ": " << r.err;
    EXPECT_NE(r.out.find("trial    0: "), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace pb::tuning
