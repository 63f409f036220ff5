#pragma once
// One attempt of one trial, as a child process in the trial's directory
// STUDY_DIR/trials/NNNN/ (trial.log gets the child's stdout and stderr, params.json the
// parameters).
//
// kind = "train": `playbook train BASE --set <fixed> --set <params> --out trials/NNNN/run
// [--device D]`, with --resume when run/ already holds a run (a retried trial continues from its
// last checkpoint). Exit codes: 0 completed (the objective from run/summary.json or
// run/metrics.jsonl); 2 configuration error: infeasible, the reason is the validation message
// (the line after "playbook: error: "); 3 diverged: infeasible, "diverged at step S" (from
// summary.json); 4 out of memory: infeasible; anything else, or a signal: failed (retried).
//
// kind = "command": the study's command, run in the study file's directory, with
//   PLAYBOOK_TRIAL_PARAMS  path of params.json: {"key": value, ...}
//   PLAYBOOK_TRIAL_RESULT  path where it writes its result JSON (result.json):
//                          {"objective": 0.12, "metrics": {...}, "best_step": 300}, or
//                          {"status": "infeasible", "reason": "..."}; without "objective" the
//                          study's objective metric is read from "metrics"
//   PLAYBOOK_TRIAL_DIR, PLAYBOOK_TRIAL_INDEX, PLAYBOOK_DEVICE
// and the placeholders {params}, {result}, {trial_dir}, {index} in its arguments replaced by
// the same. Exit 0 with a result: completed (or infeasible); otherwise failed (retried).
//
// Both get OMP_NUM_THREADS and OPENBLAS_NUM_THREADS when threads > 0, and a train trial
// --threads too.
#include <atomic>
#include <filesystem>
#include <optional>
#include <string>

#include "tuning/process.h"
#include "tuning/study_spec.h"
#include "tuning/trial.h"

namespace pb::tuning {

struct TrialContext {
  const StudySpec* spec = nullptr;
  std::filesystem::path study_dir;
  std::filesystem::path playbook;  // the playbook executable (for kind = train)
  std::string device;              // passed as --device / PLAYBOOK_DEVICE when not empty
  int threads = 0;
};

// Runs the attempt to its end. When `abort` becomes true the child's process group is killed
// and nullopt returned (the caller gives the trial back).
std::optional<TrialOutcome> run_trial(const TrialContext& context, const TrialRecord& trial,
                                      const std::atomic<bool>& abort);

// The outcome of a `playbook train` child from its exit status, the attempt's part of the log
// and the run directory. Public for tests.
TrialOutcome train_outcome(const StudySpec& spec, const ExitStatus& exit,
                           const std::string& attempt_log, const std::filesystem::path& run_dir);
// The objective of a finished run directory by the study's objective (summary.json key, else a
// metrics.jsonl field); infeasible when it was never logged.
TrialOutcome run_dir_outcome(const Objective& objective, const std::filesystem::path& run_dir);

}  // namespace pb::tuning
