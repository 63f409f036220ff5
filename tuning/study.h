#pragma once
// A study directory and the read API over it (what `playbook study status|best|export`,
// `playbook studies` and the analysis/report read):
//   STUDY_DIR/study.db         the store (tuning/sqlite_store.h)
//   STUDY_DIR/study.toml       a copy of the study file
//   STUDY_DIR/trials/0007/     one directory per trial: trial.log (the child's stdout and
//                              stderr), params.json, result.json (kind = command), and run/
//                              (the `playbook train --out` run directory, kind = train)
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tuning/store.h"
#include "tuning/study_spec.h"
#include "tuning/trial.h"

namespace pb::tuning {

// A study as stored: its spec (parsed from the copy in the study directory), its record and all
// its trials in index order.
struct Study {
  std::filesystem::path dir;
  StudySpec spec;
  StudyRecord record;
  std::vector<TrialRecord> trials;
};

// Reads a study directory. `rules` is only needed to re-derive types from the config schema
// (the stored params already carry them); without it the copy is parsed without key checks.
// Throws StudyError / StoreError naming the directory.
Study load_study(const std::filesystem::path& study_dir, const TrainRules* rules = nullptr);

// Creates (or, when it exists with the same study file, reopens) the study directory of `spec`:
// copies the study file, creates the store with every trial pending. Safe to call from several
// processes at once. Throws StoreError when the directory holds a different study.
void init_study(const std::filesystem::path& study_dir, const StudySpec& spec);

// "trials/0007" for index 7 of a study with up to 10^4 trials (at least 4 digits).
std::string trial_dir_name(int64_t index, int64_t total_trials);

// The run directory of a trial relative to the study directory: trials/NNNN/run for kind =
// train (what `playbook train --out` wrote), trials/NNNN for commands.
std::string run_dir_of(const Study& study, const TrialRecord& trial);

// The trial's parameters as (key, value text) pairs in search-space order.
std::vector<std::pair<std::string, std::string>> params_of(const TrialRecord& trial);

struct StudyCounts {
  int64_t total = 0, pending = 0, running = 0, completed = 0, infeasible = 0, failed = 0;
};
StudyCounts count_trials(const std::vector<TrialRecord>& trials);

// The best completed trial by the study's objective, or nullptr.
const TrialRecord* best_trial(const Study& study);

// The command that reproduces a trial: `playbook train BASE --set k=v ...` (kind = train), or
// the command with its params file (kind = command). `base` is shown relative to the current
// directory when it is below it.
std::string reproduce_command(const Study& study, const TrialRecord& trial);

// CSV of every trial: index, every parameter, status, reason, objective, best_step, run_dir
// (run_dir_of).
std::string export_csv(const Study& study);

// One row of the tracking table (`playbook studies`).
struct TrackingRow {
  std::string name, dir, base, notes;
  StudyCounts counts;
  std::optional<double> best_objective;
  std::string objective;    // "best_val_error (minimize)"
  std::string best_params;  // "optimizer.learning_rate=0.05 optimizer.momentum=0.9"
  int64_t best_index = -1;
  std::string reproduce;
};
TrackingRow tracking_row(const Study& study);
// Every study directory (holding study.db, or a store file: --store) below root, sorted by path.
// Unreadable studies are reported in `errors` (one line each), not thrown.
std::vector<TrackingRow> tracking_table(const std::filesystem::path& root,
                                        std::vector<std::string>* errors);

enum class TableFormat { Text, Csv, Markdown };
std::string format_tracking_table(const std::vector<TrackingRow>& rows, TableFormat format);

// A CSV field, quoted when it holds a comma, quote or newline.
std::string csv_field(const std::string& s);

}  // namespace pb::tuning
