#pragma once
// The training configuration: the TOML schema of `playbook train` (every key documented), and
// the typed TrainConfig the trainer runs from. Sections:
//   [model]      which network (mlp | resnet) and its shape and normalisation
//   [data]       dataset, validation split, augmentation, loader threads
//   [optimizer]  name and hyperparameters (the union over the optimizer registry; a key that
//                does not apply to the chosen optimizer is an error when set)
//   [schedule]   learning-rate schedule name and hyperparameters (same rule)
//   [train]      batch sizes, step budget, evaluation / logging / checkpoint cadence, seeds,
//                device, clipping, weight averaging, divergence detection
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <functional>
#include <memory>

#include "runtime/config/config.h"
#include "runtime/nn/module.h"
#include "runtime/optim/clip.h"
#include "runtime/optim/ema.h"
#include "runtime/optim/optimizer.h"
#include "runtime/optim/schedule.h"

namespace pb::train {

struct DataConfig {
  std::string dataset = "fashion_mnist";  // fashion_mnist | mnist | cifar10 | cifar100 | synthetic
  std::filesystem::path dir;
  int64_t validation_size = 5000;
  int64_t train_examples = 0;  // 0: every training example; N: a fixed-seed subset of N
  int64_t crop_padding = 0;
  bool horizontal_flip = false;
  int workers = 2;
  int prefetch = 4;
  // synthetic only
  std::vector<int64_t> synthetic_shape = {3, 224, 224};
  int64_t synthetic_classes = 1000;
  int64_t synthetic_count = 4096;
};

// What a model needs to know of the data.
struct DataShape {
  int64_t channels, height, width, num_classes;
};

// The [model] section comes from the layer above (models/zoo.h): it declares its keys and
// builds a network from a validated config, so the runtime never depends on the model zoo.
struct ModelBuilder {
  std::function<void(config::Schema&)> add_keys;
  std::function<std::shared_ptr<nn::Module>(const config::Config&, const DataShape&, Generator&)>
      build;
};

struct TrainConfig {
  DataConfig data;
  optim::OptimizerConfig optimizer;
  optim::ScheduleConfig schedule;
  double learning_rate = 0.1;
  optim::ClipConfig clip;
  bool ema = false;
  optim::EmaConfig ema_config;
  double label_smoothing = 0.0;

  int64_t batch_size = 128;
  int64_t eval_batch_size = 1000;
  int64_t max_train_steps = 1000;
  int64_t eval_every = 500;
  int64_t log_every = 50;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 2;
  int64_t keep_best = 3;
  uint64_t model_seed = 0;
  uint64_t data_seed = 0;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  bool deterministic = false;
  double divergence_factor = 20.0;  // stop when the logged loss exceeds this x the first one
};

// The schema of every key (the model's keys first), with its default, range and doc.
config::Schema train_schema(const ModelBuilder& model);

// Typed view of a validated Config. Throws config::ConfigError naming the key for
// cross-key problems: an optimizer hyperparameter that does not apply to the chosen optimizer,
// checkpoint_every not a multiple of log_every, eval_batch_size below batch_size, ...
TrainConfig train_config_from(const config::Config& config, const std::string& source);

}  // namespace pb::train
