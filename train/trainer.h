#pragma once
// The trainer: runs one training job from a validated config into a run directory, the
// interface the tuning layer reads:
//   <out>/config.toml       the fully resolved config
//   <out>/metrics.jsonl     one JSON object per logged step: step, lr, train_loss, grad_norm
//                           (unclipped), examples_per_sec, data_wait_fraction, and at eval steps
//                           val_loss, val_error
//   <out>/checkpoints/step_NNNNNNNN/  model.safetensors (parameters and buffers, torchvision
//                           names), state.safetensors (optimizer, clipping, EMA state),
//                           state.json (step, RNG states, loader position, best list)
//   <out>/best/step_NNNNNNNN.safetensors   the keep_best checkpoints with the lowest
//                           validation error (retrospective checkpoint selection)
//   <out>/summary.json      written last: status (completed | diverged | out_of_memory, with
//                           a reason), the loss before the first update, best step and
//                           validation error, final and best test error, throughput, peak
//                           device memory, time, the hyperparameters that ran and the config
// The budget is in steps; the host synchronises with the device only at log, eval and
// checkpoint steps.
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "runtime/config/config.h"

namespace pb::train {

// Exit code of `playbook train` for a run stopped because its loss diverged.
inline constexpr int kExitDiverged = 3;

struct TrainOptions {
  std::filesystem::path out_dir;
  bool resume = false;
  std::string device_override;  // from --device; empty: the config's train.device
  std::ostream* log = nullptr;  // progress lines; nullptr: std::cout
  // For `playbook profile` (train/profile.h): train on one batch of random inputs of the data
  // set's shapes and classes, made on the device before the first step (no loader, no copies),
  // to measure the compute alone; and skip the final test evaluation.
  bool device_synthetic_input = false;
  bool final_evaluation = true;
};

struct RunSummary {
  std::string status;  // completed | diverged | out_of_memory
  int64_t steps = 0;
  int64_t best_step = -1;
  double best_val_error = -1;
  double final_val_error = -1;
  double test_error = -1;       // final model
  double best_test_error = -1;  // best checkpoint (by validation error)
  int test_evaluations = 0;     // test-set passes: 1 when the best checkpoint is the final model
  double examples_per_sec = 0;
  double wall_seconds = 0;
  std::vector<int64_t> input_shape;  // (B,C,H,W) of the inputs the steps trained on
  std::string reason;                // diverged / out_of_memory: what happened, in words
};

// Trains per `config` (from resolve() in train/config.h); `source` names the config file in
// errors. Throws pb::Error (data, checkpoint, device problems) before creating anything in
// out_dir when the problem is known up front.
RunSummary train(const config::Config& config, const std::string& source,
                 const TrainOptions& options);

struct EvalResult {
  double loss = 0, error = 0;
  int64_t examples = 0;
};

// Evaluates a checkpoint written by train() (its metadata holds the config) on a split
// ("test" or "validation") of its dataset, or of the dataset in `data_dir` when given.
EvalResult evaluate_checkpoint(const std::filesystem::path& checkpoint, const std::string& split,
                               const std::filesystem::path& data_dir, const std::string& device);

}  // namespace pb::train
