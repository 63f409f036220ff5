#pragma once
// The playbook's procedures as studies: `playbook sweep batch-size|lr|warmup|clip CONFIG`.
//
// Each sweep generates a study file (tuning/study_spec.h) with one scientific dimension whose
// values are the sweep's points, and, where one point sets several keys, `with` lists paired
// with them (a warmup of w runs w + 2w steps). The study engine runs it (resumable, parallel
// workers, listed by `playbook studies`); the sweep's options are kept in STUDY_DIR/sweep.json;
// the analysis below reads the trials' run directories and writes the verdict:
//   STUDY_DIR/verdict.json   machine-readable (the report's section per sweep kind)
//   STUDY_DIR/verdict.txt    the same in a few plain lines
//
// verdict.json, common fields: {"procedure": "batch_size" | "lr" | "warmup" | "clip",
// "study": name, "config": base config, "summary": one line, "warnings": [...],
// "trials": [...] (one object per trial: its point, status, reason, run_dir and measures),
// "plots": {name: [row objects]} (long-form rows, one chart each, ready for Vega-Lite)}, and
// the procedure's own answer fields (see each analyse_* below and README "Procedures").
//
// What counts as unstable (a trial's `instability`): the trainer's own stop (summary.json status
// "diverged"), checked again here from the log: a non-finite training loss, or one above
// divergence_factor x initial_loss (the loss before the first update) at any log step including
// the first; or the playbook's signature of instability, a sudden rise of the training loss
// after a steady decline: a logged loss above kRiseFactor x the lowest loss logged before it,
// by at least kRiseFloor x initial_loss, after the loss had fallen below 0.9 x its first value.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tuning/study.h"

namespace pb::tuning::sweep {

inline constexpr double kRiseFactor = 1.5;
inline constexpr double kRiseFloor = 0.1;

// One metrics.jsonl line, the fields the sweeps read.
struct LogLine {
  int64_t step = 0;
  double lr = 0, train_loss = 0, examples_per_sec = 0, data_wait_fraction = 0;
  double clipped_fraction = 0;
  std::optional<double> val_error;
  std::vector<double> grad_norms;  // every step since the previous line
};

// What a sweep reads of one run directory (summary.json and metrics.jsonl).
struct RunLog {
  bool has_summary = false;
  std::string status;  // completed | diverged | out_of_memory ("" without summary.json)
  std::string reason;
  std::optional<double> initial_loss, best_val_error, peak_memory_bytes;
  double divergence_factor = 20;  // the run's train.divergence_factor
  int64_t steps = 0;
  std::vector<LogLine> lines;
};
RunLog read_run_log(const std::filesystem::path& run_dir);

// A run's stability verdict (see the top of this file).
struct Stability {
  bool unstable = false;
  std::string kind;  // "" (stable), "diverged", "loss_spike"
  std::string detail;
  std::optional<int64_t> step;  // where it showed
};
Stability assess_stability(const RunLog& run);

// The p-th percentile (0..100) of `values`, linear interpolation between order statistics
// (NumPy's default, Hyndman-Fan type 7): position h = (n - 1) p / 100 of the sorted values.
double percentile(std::vector<double> values, double p);

// ---- the studies a sweep generates ----------------------------------------------------------

// The base every sweep names: the training config and its resolved values the sweep needs.
struct Base {
  std::filesystem::path config;        // absolute
  std::vector<std::string> overrides;  // the user's --set, kept in the study's fixed values
  int64_t max_train_steps = 0, batch_size = 0, eval_batch_size = 0, log_every = 0;
  double learning_rate = 0;
  bool has_validation = true;
  std::string dataset;  // data.dataset
  int64_t example_delay_us = 0;
  std::vector<int64_t> shape;  // (C,H,W) of the dataset (for its synthetic twin)
  int64_t classes = 0, train_count = 0;
};

struct BatchSizeOptions {
  std::vector<int64_t> sizes;  // ascending
  int64_t steps = 50;          // per trial; windows of steps / 5, the first is not timed
};
struct LrOptions {
  double min = 0, max = 0;
  int trials = 9;
  int64_t steps = 0;                // 0: the base max_train_steps
  std::optional<double> fit_train;  // target training loss
};
struct WarmupOptions {
  double unstable_lr = 0, factor = 10;
  std::vector<int64_t> warmups;  // empty: 10, 100, 1000, 10000 up to 10% of max_train_steps
};
struct ClipOptions {
  double percentile = 90;
  int64_t steps = 0;  // 0: the base max_train_steps
  bool verify = false;
};

// A generated study: its name and study-file text, and the sweep's record (sweep.json).
struct Plan {
  std::string name;
  std::string text;
  nlohmann::ordered_json record;  // {"procedure": ..., options...}
};
Plan batch_size_plan(const Base& base, const BatchSizeOptions& options);
Plan lr_plan(const Base& base, const LrOptions& options);
Plan warmup_plan(const Base& base, const WarmupOptions& options);
Plan clip_plan(const Base& base, const ClipOptions& options);
// The clipped run of `playbook sweep clip --verify`: a child study at STUDY_DIR/verify.
Plan clip_verify_plan(const Base& base, const ClipOptions& options, double threshold);

// ---- verdicts ----------------------------------------------------------------------------

struct Verdict {
  nlohmann::ordered_json json;
  std::string text;
};
// The verdict of a sweep's study directory (reads sweep.json and every trial's run directory);
// the procedure comes from sweep.json. Throws StudyError for a directory that is no sweep.
Verdict analyse(const std::filesystem::path& study_dir);
Verdict analyse_batch_size(const Study& study, const nlohmann::json& record);
Verdict analyse_lr(const Study& study, const nlohmann::json& record);
Verdict analyse_warmup(const Study& study, const nlohmann::json& record);
Verdict analyse_clip(const Study& study, const nlohmann::json& record);
// Writes verdict.json and verdict.txt into the study directory.
void write_verdict(const std::filesystem::path& study_dir, const Verdict& verdict);

}  // namespace pb::tuning::sweep
