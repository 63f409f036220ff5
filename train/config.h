#pragma once
// The training configuration: the TOML schema of `playbook train` and its resolution. Sections,
// each published by the code that uses it:
//   [model]      models/zoo.h: which network and its shape and normalisation
//   [data]       below: dataset, validation split, augmentation, loader threads
//   [optimizer]  runtime/optim/optimizer.h: a choice section; `name` picks a registry entry and
//                only that optimizer's keys exist, each with that optimizer's own default
//   [schedule]   runtime/optim/schedule.h: a choice section, the same way
//   [clip]       runtime/optim/clip.h: gradient (or update) clipping by global norm
//   [ema]        runtime/optim/ema.h: Polyak averaging of the weights for evaluation
//   [train]      below: batch sizes, step budget, cadence of eval / logs / checkpoints, seeds...
//
// Resolution (resolve()) is one function: a value the user wrote is always the value used (a
// key counts as given by where it came from, never by comparing it with a default); a key the
// chosen optimizer or schedule does not take is an error naming both; derived values (decay_steps
// = 0: until the end of training) are written back so the resolved config.toml is exactly what
// ran; and the cross-key rules below are checked before anything is created, each error naming
// the keys involved:
//   - train.eval_batch_size >= train.batch_size
//   - train.checkpoint_every a multiple of train.log_every
//   - model.norm = "ghost": train.batch_size a multiple of model.virtual_batch_size (when smaller)
//   - model.norm = "layer" only for model.name = "mlp"
//   - schedule.warmup_steps < train.max_train_steps
//   - data.synthetic_shape = [channels, height, width]
//   - train.device parses (auto, cpu, cuda, cuda:N)
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "runtime/optim/clip.h"
#include "runtime/optim/ema.h"
#include "runtime/optim/optimizer.h"
#include "runtime/optim/schedule.h"

namespace pb::train {

// [data]. Fields carry no defaults: the key specs in config.cpp are the only ones.
struct DataConfig {
  std::string dataset;  // fashion_mnist | mnist | cifar10 | cifar100 | synthetic
  std::filesystem::path dir;
  int64_t validation_size;
  int64_t train_examples;  // 0: every training example; N: a fixed-seed subset of N
  int64_t crop_padding;
  bool horizontal_flip;
  int workers;
  int prefetch;
  std::vector<int64_t> synthetic_shape;  // synthetic only: (channels, height, width)
  int64_t synthetic_classes;
  int64_t synthetic_count;
  int64_t example_delay_us;  // simulated read latency per example (0: off)
};

// [train]
struct TrainSettings {
  int64_t batch_size;
  int64_t eval_batch_size;
  int64_t max_train_steps;
  int64_t eval_every;
  int64_t log_every;
  int64_t checkpoint_every;
  int64_t keep_checkpoints;
  int64_t keep_best;
  uint64_t model_seed;
  uint64_t data_seed;
  std::string device;  // auto | cpu | cuda | cuda:N
  bool deterministic;
  double label_smoothing;
  std::string loss;          // cross_entropy | mse
  double divergence_factor;  // stop when the logged loss exceeds this x the loss before training
  int64_t memory_limit_mb;   // cap on the memory the run may hold on its device (0: none)
  std::string nvtx;          // off | step: NVTX ranges of the step phases (train/nvtx.h)
};

// The typed view of a resolved Config that the trainer runs from.
struct TrainConfig {
  DataConfig data;
  TrainSettings train;
  optim::OptimizerConfig optimizer;
  optim::ScheduleConfig schedule;
  double learning_rate;  // optimizer.learning_rate: the schedule's base value
  optim::ClipConfig clip;
  optim::EmaConfig ema;  // ema.decay = 0: no averaging
};

// Every training-config key (the choice sections with all their entries).
const config::Schema& schema();

// Loads `file` with `overrides` ("section.key=value", later ones win) and checks every key and
// every cross-key rule above; derived values are filled in. Throws config::ConfigError naming the
// file or override and the keys.
config::Config resolve(const std::filesystem::path& file,
                       const std::vector<std::string>& overrides = {});
// The same for TOML text (a checkpoint's embedded config); `source` names it in messages.
config::Config resolve_text(std::string_view text, std::string_view source,
                            const std::vector<std::string>& overrides = {});

// The typed view of a resolved config.
TrainConfig train_config(const config::Config& config);

}  // namespace pb::train
