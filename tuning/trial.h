#pragma once
// A trial of a study as the store records it, and how one ends.
//
// Status. pending (waiting for a worker), running (claimed; the worker heartbeats it),
// completed (has an objective), infeasible (the point cannot be trained: diverged, out of
// memory, an invalid combination of hyperparameters; data for the analysis, with the reason),
// failed (the trial crashed `retries + 1` times; reported, not retried again).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pb::tuning {

enum class TrialStatus { Pending, Running, Completed, Infeasible, Failed };

std::string_view to_string(TrialStatus status);
// Throws std::invalid_argument for an unknown name.
TrialStatus parse_trial_status(std::string_view name);
// Completed, infeasible and failed trials are done.
inline bool is_done(TrialStatus s) {
  return s == TrialStatus::Completed || s == TrialStatus::Infeasible || s == TrialStatus::Failed;
}

struct TrialRecord {
  int64_t index = 0;
  std::string params_json;  // {"optimizer.learning_rate": 0.01, ...} in search-space order
  TrialStatus status = TrialStatus::Pending;
  std::string reason;    // infeasible/failed: why; pending after a crash: the last crash
  std::string worker;    // host:pid:start of the claiming worker (running)
  double heartbeat = 0;  // unix seconds of the last heartbeat (running)
  int attempts = 0;      // claims so far
  int failures = 0;      // crashes so far (a failed trial has retries + 1)
  std::string run_dir;   // relative to the study directory: trials/0007
  std::optional<double> objective;
  std::optional<int64_t> best_step;
  std::string metrics_json;  // the result's other metrics ({} when none)
  double started = 0;        // unix seconds of the last claim
  double finished = 0;       // unix seconds the trial ended (done trials)
};

// How one attempt of a trial ended.
struct TrialOutcome {
  TrialStatus status = TrialStatus::Failed;  // Completed, Infeasible or Failed
  std::string reason;
  std::optional<double> objective;
  std::optional<int64_t> best_step;
  std::string metrics_json = "{}";
};

}  // namespace pb::tuning
