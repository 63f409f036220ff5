#pragma once
// Insight from a study: the questions of the Tuning Playbook's "Extracting insight from
// experimental results" and "Determining whether to adopt a training pipeline change", asked of
// a finished (or running) study and answered with numbers and a verdict in words.
//
// Everything here (namespace pb::tuning::insight) is a pure function of plain structs (StudyData:
// the search space and every trial with its objective and training curve), independent of the study
// store: an adapter (tuning/report_input.h) fills StudyData from a study directory, and the unit
// tests build it by hand with answers known in advance. Objectives are minimised when
// StudyData::minimize (the default, e.g. val_error); with minimize = false "best" means largest.
//
// The questions, each with its thresholds (AnalysisOptions holds them all):
//
// * Axis plots: objective vs each hyperparameter on its scale, infeasible trials marked.
// * Isolation plots: per value (discrete) or bucket (continuous, equal width on the axis'
//   scale) of a scientific hyperparameter, the best trial over the nuisance ones.
// * Boundary check: the best trials are the top k completed trials, k = max(3, ceil(10% of the
//   completed trials)) by default: the single best is one noisy draw (trial variance), three
//   or a tenth of the study tells a cluster from a fluke while staying the "best" region. An
//   edge is the outer 10% of the range on the dimension's scale (unit position u < 0.1 or
//   u > 0.9, see unit_position). An edge is flagged when the best trial lies in it, or when at
//   least half of the top k do (under uniform sampling only 10% would). A flagged edge comes
//   with a suggestion: widen by one decade on log scale (min/10, max*10), one decade of 1-x on
//   reverse-log scale (0.99 -> 0.999), half the range on linear scale (never crossing 0 for a
//   non-negative range). When every trial beyond the best one on that side is infeasible
//   (at least 2 of them), the edge is a stability limit rather than a bad boundary, and the
//   suggestion says so (reported even when the best is not in the outer 10%).
// * Training curves of the best trials (see CurveThresholds for the definitions):
//   problematic overfitting, high step-to-step variance late in training, still improving at
//   the end, saturated early.
// * Sampled enough: bootstrap (seeded, deterministic) of the best objective over n trials drawn
//   with replacement from the finished ones (infeasible draws never win), n = 1..N; median and
//   10/90% bands. More trials still help when the median best improves from n = N/2 to N by
//   more than max(half the 10-90% band at N, the meaningful difference), where the meaningful
//   difference is the measured trial-variance std when known, else 1% of |median best at N|.
//   Doubling from N/2 to N is the step from what we have to what we would get by doubling
//   again; a gain inside the band or below noise is no evidence that more trials help.
// * Trial variance: reruns of the same hyperparameters with new seeds; mean, std, min-max per
//   group, the pooled std, and whether the gap between the top two groups' means exceeds
//   2 standard errors of the difference (and whether their min-max ranges overlap).
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tuning/quasi_random.h"
#include "tuning/trial.h"

namespace pb::tuning::insight {

// The sampler's to_string(ParamValue), next to this namespace's own overloads.
using pb::tuning::to_string;

// ---- input -------------------------------------------------------------------------------------

enum class AxisScale { Linear, Log, ReverseLog, Categorical };
enum class ParamRole { Scientific, Nuisance, Fixed };
// A trial's status is the store's (tuning/trial.h), with its to_string.
using pb::tuning::TrialStatus;

std::string_view to_string(AxisScale scale);  // linear | log | reverse_log | categorical
std::string_view to_string(ParamRole role);   // scientific | nuisance | fixed

// One search-space dimension as the analysis sees it.
struct AxisSpec {
  std::string name;  // the config key, e.g. optimizer.lr
  AxisScale scale = AxisScale::Linear;
  double min = 0, max = 1;         // continuous scales; reverse_log needs max < 1
  std::vector<ParamValue> values;  // Categorical: the choices, in order
  ParamRole role = ParamRole::Nuisance;
};

struct MetricPoint {
  int64_t step = 0;
  double value = 0;
};

// A trial's training curve, from its metrics.jsonl: train_loss at log steps, val_* at eval steps.
struct TrainingCurve {
  std::vector<MetricPoint> train_loss;
  std::vector<MetricPoint> val_error;
  std::vector<MetricPoint> val_loss;
  bool empty() const { return train_loss.empty() && val_error.empty() && val_loss.empty(); }
};

struct TrialResult {
  int64_t index = 0;
  TrialStatus status = TrialStatus::Pending;
  std::string reason;  // why infeasible / failed
  Params params;       // by axis name
  std::optional<double> objective;
  int64_t best_step = -1;
  TrainingCurve curve;
  std::string run_dir;
};

struct RerunGroup {
  RerunGroup() = default;
  RerunGroup(std::string label_, std::vector<double> objectives_,
             std::optional<double> original_ = std::nullopt)
      : label(std::move(label_)), objectives(std::move(objectives_)), original(original_) {}

  std::string label;               // e.g. "trial 7"
  std::vector<double> objectives;  // one per seed
  // The original run that was picked for rerunning (not counted: picked for being best, it is
  // biased; shown for comparison, and its bias is reported).
  std::optional<double> original;
};

struct StudyData {
  std::string name;
  std::string objective = "val_error";
  bool minimize = true;
  std::vector<AxisSpec> axes;
  std::vector<TrialResult> trials;
  int64_t budget = 0;      // planned trials; 0 when unknown
  std::string study_file;  // the study's TOML, verbatim (shown in the report)
  std::string study_dir;
  std::vector<std::string> warnings;  // problems met while loading (missing metrics, ...)
  // The study's row of the tracking table (`playbook studies`), as (column, value) pairs.
  std::vector<std::pair<std::string, std::string>> tracking;
  std::vector<RerunGroup> reruns;  // reruns of the best trials with new seeds, when any
};

// ---- options -----------------------------------------------------------------------------------

struct CurveThresholds {
  // The last `late_fraction` of the run's steps is "late in training" for every diagnostic.
  double late_fraction = 0.25;
  // Validation curves are smoothed with a centred moving average of this many eval points.
  int smooth_window = 3;
  // Problematic overfitting: the late validation level (mean of the smoothed val_error over the
  // late window) exceeds the smoothed minimum by more than max(overfit_rel * |min|,
  // overfit_abs, 2 * late noise std), the minimum lies before the late window, and the training
  // loss still falls after the minimum (least-squares slope < 0).
  double overfit_rel = 0.10;
  double overfit_abs = 0.002;
  // High late variance: residual std of a linear fit over the late window, relative to the
  // window's mean level, above variance_rel_train (train_loss) or variance_rel_val (val_error,
  // needs >= 4 eval points in the window).
  double variance_rel_train = 0.10;
  double variance_rel_val = 0.10;
  // Still improving: over the late window the least-squares slope of val_error (train_loss if
  // fewer than 4 eval points there) predicts a drop of more than improving_rel of the level
  // across the window, with t = slope / stderr <= -2 (not a noisy wobble).
  double improving_rel = 0.01;
  // Saturated early: the smoothed curve first comes within max(saturated_rel * |best|,
  // overfit_abs) of its best value before saturated_fraction of the run.
  double saturated_fraction = 0.5;
  double saturated_rel = 0.01;
};

struct AnalysisOptions {
  int boundary_top_k = 0;  // 0: max(3, ceil(boundary_top_fraction * completed))
  double boundary_top_fraction = 0.10;
  double edge_fraction = 0.10;  // outer fraction of the range on its scale
  int isolation_buckets = 0;    // continuous axes; 0: clamp(completed / 4, 3, 10)
  int curve_trials = 3;         // diagnose the best this many trials
  CurveThresholds curves;
  int bootstrap_samples = 1000;
  uint64_t bootstrap_seed = 0;
  double bootstrap_rel_tol = 0.01;  // meaningful difference: this * |median best at N| ...
  std::optional<double> trial_std;  // ... or the measured trial-variance std when known
};

// ---- results -----------------------------------------------------------------------------------

// The value of a trial on an axis: numeric (log scales need > 0) or a category label.
struct AxisValue {
  bool numeric = false;
  double x = std::numeric_limits<double>::quiet_NaN();
  std::string label;
};
// params[axis.name] as an AxisValue; nullopt when the trial has no value for the axis.
std::optional<AxisValue> axis_value(const TrialResult& trial, const AxisSpec& axis);

// The position of x on the axis' scale, 0 at min and 1 at max (may leave [0,1] for points
// outside the range): linear (x-min)/(max-min), log log(x/min)/log(max/min), reverse_log
// log((1-min)/(1-x))/log((1-min)/(1-max)). NaN when undefined (x <= 0 on log, x >= 1 on
// reverse_log, categorical).
double unit_position(const AxisSpec& axis, double x);

struct AxisPoint {
  int64_t trial = 0;
  AxisValue value;
  TrialStatus status = TrialStatus::Completed;
  std::optional<double> objective;  // completed trials only
};
struct AxisPlot {
  AxisSpec axis;
  std::vector<AxisPoint> points;  // every trial with a value on this axis, pending ones excluded
};
AxisPlot axis_plot(const StudyData& study, const AxisSpec& axis);

struct IsolationBucket {
  std::string label;      // the value, or "[lo, hi)"
  double lo = 0, hi = 0;  // continuous buckets (on the natural scale); NaN for values
  int trials = 0;         // finished trials in the bucket (completed + infeasible)
  int completed = 0;
  std::optional<int64_t> best_trial;
  std::optional<double> best_objective;
};
struct IsolationPlot {
  AxisSpec axis;
  std::vector<IsolationBucket> buckets;
  std::optional<size_t> best_bucket;                      // the bucket holding the overall best
  double gap = std::numeric_limits<double>::quiet_NaN();  // |best - runner-up bucket|
  std::string verdict;
};
// Throws std::invalid_argument for an axis that is not in the study.
IsolationPlot isolation_plot(const StudyData& study, const AxisSpec& axis,
                             const AnalysisOptions& options = {});

struct EdgeCheck {
  bool best_in_edge = false;
  int top_in_edge = 0;
  bool flagged = false;
  bool stability_limit = false;  // every trial beyond the best on this side is infeasible
  std::string suggestion;        // empty when not flagged
};
struct BoundaryCheck {
  AxisSpec axis;
  bool applicable = false;  // continuous axes with at least one completed trial
  std::string note;         // why not applicable
  int top_k = 0;
  double best_position = std::numeric_limits<double>::quiet_NaN();  // unit position of the best
  EdgeCheck low, high;
  std::string verdict;
};
BoundaryCheck boundary_check(const StudyData& study, const AxisSpec& axis,
                             const AnalysisOptions& options = {});

enum class CurveIssue { Overfitting, HighLateVariance, StillImproving, SaturatedEarly };
std::string_view to_string(CurveIssue issue);  // overfitting | high_late_variance | ...

struct CurveFinding {
  CurveIssue issue;
  bool fired = false;
  bool evaluated = false;  // false when the curve is too short to tell
  std::string detail;      // the numbers behind the decision
};
struct CurveDiagnosis {
  int64_t trial = -1;
  int64_t last_step = 0;
  std::vector<CurveFinding> findings;  // one per CurveIssue, in enum order
  bool fired(CurveIssue issue) const;
};
CurveDiagnosis diagnose_curve(const TrainingCurve& curve, const CurveThresholds& thresholds = {});

struct BootstrapPoint {
  int n = 0;
  double median = 0, p10 = 0, p90 = 0;  // NaN when every draw was infeasible
};
struct SamplingCheck {
  int finished = 0;  // trials drawn from (completed + infeasible)
  std::vector<BootstrapPoint> curve;
  double gain = std::numeric_limits<double>::quiet_NaN();  // median(N/2) - median(N), >= 0 good
  double band = std::numeric_limits<double>::quiet_NaN();  // p90 - p10 at N
  double tolerance = std::numeric_limits<double>::quiet_NaN();
  bool applicable = false;
  bool more_trials_help = false;
  std::string verdict;
};
// objectives: one per finished trial, nullopt for infeasible ones.
SamplingCheck sampling_check(const std::vector<std::optional<double>>& objectives, bool minimize,
                             const AnalysisOptions& options = {});

struct RerunStats {
  std::string label;
  int n = 0;
  double mean = 0, std = 0, min = 0, max = 0;  // std: sample (n-1); 0 for n = 1
};
struct TrialVariance {
  std::vector<RerunStats> groups;  // best mean first
  double pooled_std = std::numeric_limits<double>::quiet_NaN();
  double top_gap = std::numeric_limits<double>::quiet_NaN();     // |mean1 - mean2|
  double gap_stderr = std::numeric_limits<double>::quiet_NaN();  // pooled * sqrt(1/n1 + 1/n2)
  bool gap_exceeds_noise = false;                                // top_gap > 2 * gap_stderr
  bool ranges_overlap = true;
  // Mean of (original - rerun mean) over groups with an original, in "better" direction: > 0
  // when the selected runs were luckier than their reruns (selection bias).
  double selection_bias = std::numeric_limits<double>::quiet_NaN();
  // Its standard error from the pooled std (each difference is a rerun mean minus one more
  // draw); the verdict says "lucky seeds" when the bias exceeds it.
  double selection_bias_stderr = std::numeric_limits<double>::quiet_NaN();
  std::string verdict;
};
TrialVariance trial_variance(const std::vector<RerunGroup>& groups, bool minimize);

struct TrialCounts {
  int total = 0, pending = 0, running = 0, completed = 0, infeasible = 0, failed = 0;
};

struct StudyAnalysis {
  TrialCounts counts;
  std::optional<int64_t> best_trial;
  std::optional<double> best_objective;
  std::vector<int64_t> ranked;  // completed trials, best first
  std::vector<AxisPlot> axis_plots;
  std::vector<IsolationPlot> isolation_plots;  // scientific axes
  std::vector<BoundaryCheck> boundaries;
  std::vector<CurveDiagnosis> curves;  // the best curve_trials trials
  SamplingCheck sampling;
  std::optional<TrialVariance> variance;  // when the study carries reruns
  std::vector<std::string> verdicts;      // every verdict, one sentence each, most important first
};

StudyAnalysis analyze_study(const StudyData& study, const AnalysisOptions& options = {});

// The verdicts as plain text (what `playbook study status` prints) and as JSON.
std::string analysis_text(const StudyData& study, const StudyAnalysis& analysis);
nlohmann::json analysis_json(const StudyData& study, const StudyAnalysis& analysis);

}  // namespace pb::tuning::insight
