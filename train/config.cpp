#include "train/config.h"

#include <fmt/format.h>

#include <algorithm>

#include "models/zoo.h"
#include "runtime/config/binding.h"
#include "runtime/core/device.h"

namespace pb::train {
namespace {

using config::ConfigError;

// The schema and the field bindings of [data] and [train], built once.
struct TrainSchema {
  config::Schema schema;
  config::Binder<DataConfig> data;
  config::Binder<TrainSettings> train;

  TrainSchema() {
    config::Schema& s = schema;
    models::add_model_keys(s);

    // [data]
    data.bind(s, &DataConfig::dataset, "data.dataset", "fashion_mnist", "dataset")
        .one_of({"fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic"});
    data.bind(s, &DataConfig::dir, "data.dir", "/usr/share/datasets/fashion-mnist",
              "directory with the dataset files (IDX for (fashion_)mnist, binary batches for "
              "cifar)");
    data.bind(s, &DataConfig::validation_size, "data.validation_size", 5000,
              "examples carved from the training set (fixed seed) for validation (0: none)")
        .at_least(0);
    data.bind(s, &DataConfig::train_examples, "data.train_examples", 0,
              "train on a fixed-seed random subset of this many examples (0: all)")
        .at_least(0);
    data.bind(s, &DataConfig::crop_padding, "data.crop_padding", 0,
              "random crop with this much zero padding (0: off)")
        .at_least(0);
    data.bind(s, &DataConfig::horizontal_flip, "data.horizontal_flip", false,
              "random horizontal flips");
    data.bind(s, &DataConfig::workers, "data.workers", 2,
              "data loader threads (0: load on the training thread)")
        .at_least(0);
    data.bind(s, &DataConfig::prefetch, "data.prefetch", 4,
              "batches prepared ahead of the training step")
        .at_least(1);
    data.bind(s, &DataConfig::synthetic_shape, "data.synthetic_shape",
              std::vector<int64_t>{3, 224, 224}, "synthetic dataset: (channels, height, width)")
        .at_least(1);
    data.bind(s, &DataConfig::synthetic_classes, "data.synthetic_classes", 1000,
              "synthetic dataset: number of classes")
        .at_least(2);
    data.bind(s, &DataConfig::synthetic_count, "data.synthetic_count", 4096,
              "synthetic dataset: number of examples")
        .at_least(1);
    data.bind(s, &DataConfig::example_delay_us, "data.example_delay_us", 0,
              "simulated storage latency: each example's read sleeps this many microseconds (0: "
              "off); for studying input-bound training")
        .at_least(0);

    // [optimizer] and [schedule]: choice sections over the registries.
    std::vector<config::Choice> optimizers;
    for (const optim::OptimizerInfo& info : optim::optimizer_registry()) {
      optimizers.push_back({info.name, info.hyperparameters});
    }
    s.add_choice("optimizer.name", "momentum", "update rule (its keys follow)",
                 std::move(optimizers));
    s.add_string_list(
        "optimizer.no_decay", std::vector<std::string>{},
        "parameter name globs excluded from weight decay, e.g. [\"*.bias\", \"*bn*\"]");
    std::vector<config::Choice> schedules;
    for (const optim::ScheduleInfo& info : optim::schedule_registry()) {
      config::Choice c{info.name, info.hyperparameters};
      for (const std::string& list : info.lists) {
        c.keys.push_back(config::make_key(list, config::Type::FloatList, std::nullopt,
                                          list == "boundaries"
                                              ? "steps where the factor changes"
                                              : "factor of each piece (one more than boundaries)"));
      }
      schedules.push_back(std::move(c));
    }
    s.add_choice("schedule.name", "constant", "learning-rate schedule (its keys follow)",
                 std::move(schedules));

    // [clip] and [ema]
    for (const config::KeySpec& k : optim::clip_keys()) s.add_in("clip", k);
    for (const config::KeySpec& k : optim::ema_keys()) s.add_in("ema", k);

    // [train]
    train.bind(s, &TrainSettings::batch_size, "train.batch_size", 128, "training examples per step")
        .at_least(1);
    train
        .bind(s, &TrainSettings::eval_batch_size, "train.eval_batch_size", 1000,
              "evaluation batch size (>= batch_size; the last batch is padded with weight 0)")
        .at_least(1);
    train
        .bind(s, &TrainSettings::max_train_steps, "train.max_train_steps", 1000,
              "training budget in steps")
        .at_least(1)
        .alias("steps");
    train
        .bind(s, &TrainSettings::eval_every, "train.eval_every", 500,
              "validation every K steps (and at the end)")
        .at_least(1);
    train
        .bind(s, &TrainSettings::log_every, "train.log_every", 50,
              "metrics.jsonl line and progress every K steps")
        .at_least(1);
    train
        .bind(s, &TrainSettings::checkpoint_every, "train.checkpoint_every", 500,
              "checkpoint every K steps (a multiple of log_every; and at the end)")
        .at_least(1);
    train
        .bind(s, &TrainSettings::keep_checkpoints, "train.keep_checkpoints", 2,
              "latest checkpoints kept in checkpoints/")
        .at_least(1);
    train
        .bind(s, &TrainSettings::keep_best, "train.keep_best", 3,
              "best checkpoints by validation error kept in best/")
        .at_least(1);
    train.bind(s, &TrainSettings::model_seed, "train.model_seed", 0,
               "seed of the model initialisation (and dropout)");
    train.bind(s, &TrainSettings::data_seed, "train.data_seed", 0,
               "seed of the data order and augmentation");
    train.bind(s, &TrainSettings::device, "train.device", "auto",
               "auto (cuda when present), cpu, cuda or cuda:N");
    train.bind(s, &TrainSettings::deterministic, "train.deterministic", false,
               "bitwise-reproducible CPU runs (one BLAS thread; resume gives identical results)");
    train
        .bind(s, &TrainSettings::loss, "train.loss", "cross_entropy",
              "training loss: cross_entropy (softmax), or mse (mean squared error of the logits "
              "against one-hot targets; validation still reports the cross-entropy)")
        .one_of({"cross_entropy", "mse"});
    train
        .bind(s, &TrainSettings::label_smoothing, "train.label_smoothing", 0.0,
              "label smoothing of the cross-entropy")
        .at_least(0)
        .at_most(1);
    train
        .bind(s, &TrainSettings::divergence_factor, "train.divergence_factor", 20.0,
              "stop as diverged when a logged training loss exceeds this multiple of the loss "
              "before the first update (or is not finite)")
        .greater_than(1);
    train
        .bind(s, &TrainSettings::memory_limit_mb, "train.memory_limit_mb", 0,
              "cap on the memory the run may hold on its device in MiB (0: none); past it an "
              "allocation fails as out of memory, as on a smaller device")
        .at_least(0);
    train
        .bind(s, &TrainSettings::nvtx, "train.nvtx", "step",
              "NVTX ranges for Nsight Systems, domain playbook: step (step, data_wait, h2d, "
              "forward, backward, optimizer, eval, checkpoint; payload the step) or off")
        .one_of({"off", "step"});
    s.check();
  }
};

const TrainSchema& train_schema() {
  static const TrainSchema s;
  return s;
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// The rules between keys, checked before anything is created (see the top of config.h).
void check_cross_keys(const config::Config& c, std::string_view source) {
  const int64_t batch = c.get<int64_t>("train.batch_size");
  const int64_t eval_batch = c.get<int64_t>("train.eval_batch_size");
  if (eval_batch < batch) {
    fail<ConfigError>("{}: train.eval_batch_size ({}) must be at least train.batch_size ({})",
                      source, eval_batch, batch);
  }
  const int64_t log_every = c.get<int64_t>("train.log_every");
  const int64_t checkpoint_every = c.get<int64_t>("train.checkpoint_every");
  if (checkpoint_every % log_every != 0) {
    fail<ConfigError>(
        "{}: train.checkpoint_every ({}) must be a multiple of train.log_every ({}) so that a "
        "resumed run logs the same windows",
        source, checkpoint_every, log_every);
  }
  const std::string norm = c.get<std::string>("model.norm");
  const int64_t virtual_batch = c.get<int64_t>("model.virtual_batch_size");
  if (norm == "ghost" && virtual_batch < batch && batch % virtual_batch != 0) {
    fail<ConfigError>(
        "{}: train.batch_size ({}) must be a multiple of model.virtual_batch_size ({}) with "
        "model.norm = \"ghost\"",
        source, batch, virtual_batch);
  }
  const std::string model = c.get<std::string>("model.name");
  if (norm == "layer" && model != "mlp") {
    fail<ConfigError>(
        "{}: model.norm = \"layer\" is for model.name = \"mlp\"; model.name = {} "
        "takes batch, ghost or none",
        source, quoted(model));
  }
  const int64_t steps = c.get<int64_t>("train.max_train_steps");
  if (c.has("schedule.warmup_steps")) {
    const int64_t warmup = c.get<int64_t>("schedule.warmup_steps");
    if (warmup >= steps) {
      fail<ConfigError>(
          "{}: schedule.warmup_steps ({}) must be less than train.max_train_steps ({})", source,
          warmup, steps);
    }
  }
  if (c.get<std::vector<int64_t>>("data.synthetic_shape").size() != 3) {
    fail<ConfigError>("{}: data.synthetic_shape must be [channels, height, width]", source);
  }
  const std::string device = c.get<std::string>("train.device");
  if (device != "auto") {
    try {
      Device::parse(device);
    } catch (const Error& e) {
      fail<ConfigError>("{}: train.device: {}", source, e.what());
    }
  }
}

optim::ScheduleConfig schedule_config(const config::Config& c) {
  optim::ScheduleConfig s;
  s.name = c.get<std::string>("schedule.name");
  s.hyperparameters = c.section_numbers("schedule");
  for (const std::string& list : optim::schedule_info(s.name).lists) {
    s.lists[list] = c.get<std::vector<double>>("schedule." + list);
  }
  return s;
}

// Builds the schedule once (its factory checks the lists and fills derived values) and writes
// the values it resolved back, so config.toml shows what runs: decay_steps = 0 becomes the steps
// left after warmup, inverse_sqrt's timescale = 0 becomes max(warmup_steps, 1), ...
void write_back_schedule(config::Config& c, std::string_view source) {
  try {
    const optim::Schedule schedule =
        optim::make_schedule(schedule_config(c), c.get<double>("optimizer.learning_rate"),
                             c.get<int64_t>("train.max_train_steps"));
    for (const auto& [name, value] : schedule.hyperparameters()) {
      const std::string key = "schedule." + name;
      const config::KeySpec* spec = c.schema().find(key);
      if (!spec) continue;
      const config::Value v = spec->type == config::Type::Int
                                  ? config::Value(static_cast<int64_t>(value))
                                  : config::Value(value);
      if (v != c.value(key)) c.set_derived(key, v);
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    fail<ConfigError>("{}: {}", source, e.what());
  }
}

config::Config finish(config::Config c, std::string_view source) {
  check_cross_keys(c, source);
  write_back_schedule(c, source);
  return c;
}

}  // namespace

const config::Schema& schema() {
  return train_schema().schema;
}

config::Config resolve(const std::filesystem::path& file,
                       const std::vector<std::string>& overrides) {
  return finish(config::load(file, schema(), overrides), file.string());
}

config::Config resolve_text(std::string_view text, std::string_view source,
                            const std::vector<std::string>& overrides) {
  return finish(config::parse(text, source, schema(), overrides), source);
}

TrainConfig train_config(const config::Config& c) {
  const TrainSchema& s = train_schema();
  TrainConfig t{};
  t.data = s.data.read(c);
  t.train = s.train.read(c);
  t.optimizer.name = c.get<std::string>("optimizer.name");
  t.optimizer.hyperparameters = c.section_numbers("optimizer");
  t.optimizer.no_decay_patterns = c.get<std::vector<std::string>>("optimizer.no_decay");
  t.learning_rate = c.get<double>("optimizer.learning_rate");
  t.schedule = schedule_config(c);
  t.clip = optim::clip_config_from(c.section_numbers("clip"));
  t.ema = optim::ema_config_from(c.section_numbers("ema"));
  return t;
}

}  // namespace pb::train
