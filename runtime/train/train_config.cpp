#include "runtime/train/train_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace pb::train {
namespace {

using config::ConfigError;

// Names of every hyperparameter any registered optimizer (or schedule) takes, in first-seen
// order, with the first spec seen for each (for its doc and default).
template <typename Registry>
std::vector<optim::HyperparameterSpec> union_of_specs(const Registry& registry) {
  std::vector<optim::HyperparameterSpec> out;
  std::set<std::string> seen;
  for (const auto& info : registry) {
    for (const auto& spec : info.hyperparameters) {
      if (seen.insert(spec.name).second) out.push_back(spec);
    }
  }
  return out;
}

config::Schema make_schema(const ModelBuilder& model) {
  config::Schema s;
  model.add_keys(s);

  // [data]
  s.add_string("data.dataset", "fashion_mnist", "dataset")
      .one_of({"fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic"});
  s.add_string("data.dir", "/usr/share/datasets/fashion-mnist",
               "directory with the dataset files (IDX for (fashion_)mnist, binary batches for "
               "cifar)");
  s.add_int("data.validation_size", 5000,
            "examples carved from the training set (fixed seed) for validation")
      .at_least(0);
  s.add_int("data.train_examples", 0,
            "train on a fixed-seed random subset of this many examples (0: all)")
      .at_least(0);
  s.add_int("data.crop_padding", 0, "random crop with this much zero padding (0: off)").at_least(0);
  s.add_bool("data.horizontal_flip", false, "random horizontal flips");
  s.add_int("data.workers", 2, "data loader threads (0: load on the training thread)").at_least(0);
  s.add_int("data.prefetch", 4, "batches prepared ahead of the training step").at_least(1);
  s.add_int_list("data.synthetic_shape", std::vector<int64_t>{3, 224, 224},
                 "synthetic dataset: (channels, height, width)")
      .at_least(1);
  s.add_int("data.synthetic_classes", 1000, "synthetic dataset: number of classes").at_least(2);
  s.add_int("data.synthetic_count", 4096, "synthetic dataset: number of examples").at_least(1);

  // [optimizer]: the name, the learning rate and every optimizer's hyperparameters.
  s.add_string("optimizer.name", "momentum", "update rule").one_of(optim::optimizer_names());
  s.add_float("optimizer.learning_rate", 0.1, "base learning rate (the schedule scales it)")
      .greater_than(0);
  for (const auto& spec : union_of_specs(optim::optimizer_registry())) {
    if (spec.name == "learning_rate") continue;
    s.add_float("optimizer." + spec.name, spec.default_value,
                spec.doc + " (only for optimizers that take it)");
  }
  s.add_string_list("optimizer.no_decay", std::vector<std::string>{},
                    "parameter name globs excluded from weight decay, e.g. [\"*.bias\", \"*bn*\"]");

  // [schedule]
  s.add_string("schedule.name", "constant", "learning-rate schedule")
      .one_of(optim::schedule_names());
  for (const auto& spec : union_of_specs(optim::schedule_registry())) {
    s.add_float("schedule." + spec.name, spec.default_value,
                spec.doc + " (only for schedules that take it)");
  }
  s.add_float_list("schedule.boundaries", std::vector<double>{},
                   "piecewise_constant: steps where the factor changes");
  s.add_float_list("schedule.factors", std::vector<double>{},
                   "piecewise_constant: factor of each piece (one more than boundaries)");

  // [train]
  s.add_int("train.batch_size", 128, "training examples per step").at_least(1);
  s.add_int("train.eval_batch_size", 1000,
            "evaluation batch size (>= batch_size; the last batch is padded with weight 0)")
      .at_least(1);
  s.add_int("train.max_train_steps", 1000, "training budget in steps").at_least(1);
  s.add_int("train.eval_every", 500, "validation every K steps (and at the end)").at_least(1);
  s.add_int("train.log_every", 50, "metrics.jsonl line and progress every K steps").at_least(1);
  s.add_int("train.checkpoint_every", 500,
            "checkpoint every K steps (a multiple of log_every; and at the end)")
      .at_least(1);
  s.add_int("train.keep_checkpoints", 2, "latest checkpoints kept in checkpoints/").at_least(1);
  s.add_int("train.keep_best", 3, "best checkpoints by validation error kept in best/").at_least(1);
  s.add_int("train.model_seed", 0, "seed of the model initialisation (and dropout)").at_least(0);
  s.add_int("train.data_seed", 0, "seed of the data order and augmentation").at_least(0);
  s.add_string("train.device", "auto", "auto (cuda when present), cpu, cuda or cuda:N");
  s.add_bool("train.deterministic", false,
             "bitwise-reproducible CPU runs (one BLAS thread; resume gives identical results)");
  s.add_float("train.label_smoothing", 0.0, "label smoothing of the cross-entropy")
      .at_least(0)
      .at_most(1);
  s.add_float("train.clip_norm", 0.0,
              "clip the global gradient norm to this (0: off; the norm is always logged)")
      .at_least(0);
  s.add_string("train.clip_target", "gradient", "what clip_norm clips")
      .one_of({"gradient", "update"});
  s.add_float("train.ema_decay", 0.0,
              "Polyak/exponential moving average of the weights used for evaluation (0: off)")
      .at_least(0)
      .less_than(1);
  s.add_bool("train.ema_warmup", false, "ramp the EMA decay as min(decay, (1+t)/(10+t))");
  s.add_float("train.divergence_factor", 20.0,
              "stop as diverged when the logged loss exceeds this multiple of the first one")
      .greater_than(1);
  s.check();
  return s;
}

// Hyperparameters of `section` set in the file or by --set (not defaults), by short name.
std::map<std::string, double> given_floats(const config::Config& c, const std::string& section,
                                           const std::set<std::string>& skip) {
  std::map<std::string, double> out;
  for (const std::string& key : c.section_keys(section)) {
    const std::string name = key.substr(section.size() + 1);
    if (skip.count(name) || c.source(key) == config::Source::Default) continue;
    const config::Value& v = c.value(key);
    // A resolved config.toml lists every key with its default: those are not choices.
    const config::KeySpec* spec = c.schema().find(key);
    if (spec && spec->default_value && *spec->default_value == v) continue;
    if (const double* d = std::get_if<double>(&v)) out[name] = *d;
  }
  return out;
}

template <typename Info>
void check_applicable(const std::map<std::string, double>& given, const Info& info,
                      const std::string& what, const std::string& source) {
  std::vector<std::string> names;
  for (const auto& spec : info.hyperparameters) names.push_back(spec.name);
  for (const auto& [name, value] : given) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      throw ConfigError(fmt::format("{}: {}.{} does not apply to {} '{}' (it takes: {})", source,
                                    what, name, what, info.name, fmt::join(names, ", ")));
    }
  }
}

}  // namespace

config::Schema train_schema(const ModelBuilder& model) {
  return make_schema(model);
}

TrainConfig train_config_from(const config::Config& c, const std::string& source) {
  TrainConfig t;
  auto str = [&](const char* k) { return c.get<std::string>(k); };
  auto i64 = [&](const char* k) { return c.get<int64_t>(k); };
  auto f64 = [&](const char* k) { return c.get<double>(k); };

  t.data.dataset = str("data.dataset");
  t.data.dir = str("data.dir");
  t.data.validation_size = i64("data.validation_size");
  t.data.train_examples = i64("data.train_examples");
  t.data.crop_padding = i64("data.crop_padding");
  t.data.horizontal_flip = c.get<bool>("data.horizontal_flip");
  t.data.workers = static_cast<int>(i64("data.workers"));
  t.data.prefetch = static_cast<int>(i64("data.prefetch"));
  t.data.synthetic_shape = c.get<std::vector<int64_t>>("data.synthetic_shape");
  if (t.data.synthetic_shape.size() != 3) {
    throw ConfigError(source + ": data.synthetic_shape must be [channels, height, width]");
  }
  t.data.synthetic_classes = i64("data.synthetic_classes");
  t.data.synthetic_count = i64("data.synthetic_count");

  t.learning_rate = f64("optimizer.learning_rate");
  t.optimizer.name = str("optimizer.name");
  t.optimizer.hyperparameters = given_floats(c, "optimizer", {"learning_rate"});
  check_applicable(t.optimizer.hyperparameters, optim::optimizer_info(t.optimizer.name),
                   "optimizer", source);
  t.optimizer.hyperparameters["learning_rate"] = t.learning_rate;
  t.optimizer.no_decay_patterns = c.get<std::vector<std::string>>("optimizer.no_decay");

  t.schedule.name = str("schedule.name");
  t.schedule.hyperparameters = given_floats(c, "schedule", {});
  const optim::ScheduleInfo& sched = optim::schedule_info(t.schedule.name);
  check_applicable(t.schedule.hyperparameters, sched, "schedule", source);
  for (const std::string& list : sched.lists) {
    t.schedule.lists[list] = c.get<std::vector<double>>("schedule." + list);
  }

  t.batch_size = i64("train.batch_size");
  t.eval_batch_size = i64("train.eval_batch_size");
  t.max_train_steps = i64("train.max_train_steps");
  t.eval_every = i64("train.eval_every");
  t.log_every = i64("train.log_every");
  t.checkpoint_every = i64("train.checkpoint_every");
  t.keep_checkpoints = i64("train.keep_checkpoints");
  t.keep_best = i64("train.keep_best");
  t.model_seed = static_cast<uint64_t>(i64("train.model_seed"));
  t.data_seed = static_cast<uint64_t>(i64("train.data_seed"));
  t.device = str("train.device");
  t.deterministic = c.get<bool>("train.deterministic");
  t.label_smoothing = f64("train.label_smoothing");
  t.clip.max_norm = f64("train.clip_norm");
  t.clip.target = str("train.clip_target") == "update" ? optim::ClipTarget::kUpdate
                                                       : optim::ClipTarget::kGradient;
  t.ema = f64("train.ema_decay") > 0;
  t.ema_config.decay = f64("train.ema_decay");
  t.ema_config.warmup = c.get<bool>("train.ema_warmup");
  t.divergence_factor = f64("train.divergence_factor");

  // Decay schedules need a length: by default the whole budget after warmup.
  const bool takes_decay_steps =
      std::any_of(sched.hyperparameters.begin(), sched.hyperparameters.end(),
                  [](const auto& spec) { return spec.name == "decay_steps"; });
  if (takes_decay_steps && !t.schedule.hyperparameters.count("decay_steps")) {
    const double warmup = t.schedule.hyperparameters.count("warmup_steps")
                              ? t.schedule.hyperparameters.at("warmup_steps")
                              : 0.0;
    t.schedule.hyperparameters["decay_steps"] =
        std::max(1.0, static_cast<double>(t.max_train_steps) - warmup);
  }
  if (t.eval_batch_size < t.batch_size) {
    throw ConfigError(
        fmt::format("{}: train.eval_batch_size ({}) must be at least train.batch_size ({})", source,
                    t.eval_batch_size, t.batch_size));
  }
  if (t.checkpoint_every % t.log_every != 0) {
    throw ConfigError(fmt::format(
        "{}: train.checkpoint_every ({}) must be a multiple of train.log_every ({}) so that a "
        "resumed run logs the same windows",
        source, t.checkpoint_every, t.log_every));
  }
  if (t.device != "auto") Device::parse(t.device);  // throws naming the text
  return t;
}

}  // namespace pb::train
