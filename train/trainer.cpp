#include "train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <variant>

#include "models/zoo.h"
#include "runtime/autograd/tape.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/data/augment.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/device/cpu.h"
#include "runtime/device/errors.h"
#include "runtime/device/memory.h"
#include "runtime/device/pinned.h"
#include "runtime/nn/layers.h"
#include "runtime/ops/ops.h"
#include "runtime/optim/clip.h"
#include "runtime/optim/ema.h"
#include "runtime/optim/optimizer.h"
#include "runtime/optim/schedule.h"
#include "train/config.h"
#include "train/evaluate.h"
#include "train/nvtx.h"
#include "train/progress.h"
#include "train/run_dir.h"
#include "train/step_phases.h"

namespace pb::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// labels:(N) int32, CPU -> (N,K) float32 one-hot rows, CPU (from `pool` when given): the
// targets of the mse loss.
Tensor one_hot(const Tensor& labels, int64_t classes, device::HostBufferPool* pool = nullptr) {
  const Shape shape{labels.numel(), classes};
  Tensor out = pool ? pool->tensor(shape, DType::F32) : empty(shape);
  const int32_t* l = labels.data<int32_t>();
  float* o = out.data<float>();
  std::fill(o, o + out.numel(), 0.0f);
  for (int64_t i = 0; i < labels.numel(); ++i) o[i * classes + l[i]] = 1.0f;
  return out;
}

// Every Dropout module's generator, by module path: the model's RNG state.
std::vector<std::pair<std::string, Generator*>> dropout_generators(nn::Module& model) {
  std::vector<std::pair<std::string, Generator*>> out;
  model.apply([&](nn::Module& m) {
    if (auto* d = dynamic_cast<nn::Dropout*>(&m)) out.emplace_back(m.path(), &d->generator());
  });
  return out;
}

class Run {
 public:
  Run(const config::Config& config, const std::string& source, const TrainOptions& options)
      : config_(config),
        cfg_(train_config(config)),
        options_(options),
        out_(options.log ? *options.log : std::cout),
        dir_(options.out_dir) {
    // Everything that can fail on bad input happens before the run directory is touched.
    device_ =
        pick_device(options.device_override.empty() ? cfg_.train.device : options.device_override);
    if (cfg_.train.deterministic) device::set_cpu_blas_threads(1);
    device::set_memory_cap(device_, static_cast<std::size_t>(cfg_.train.memory_limit_mb) << 20);
    device::reset_peak_memory(device_);
    train_set_ = load_split(cfg_.data, "train");
    test_set_ = load_split(cfg_.data, "test");
    if (cfg_.data.validation_size >= train_set_->count) {
      fail("{}: data.validation_size {} leaves no training examples ({} in {})", source,
           cfg_.data.validation_size, train_set_->count, cfg_.data.dataset);
    }
    split_ = data::carve_validation(train_set_->count, cfg_.data.validation_size, 20260101);
    if (cfg_.data.train_examples > 0) {
      if (cfg_.data.train_examples > static_cast<int64_t>(split_.train.size())) {
        fail("{}: data.train_examples {} exceeds the {} training examples", source,
             cfg_.data.train_examples, split_.train.size());
      }
      // A fixed-seed subset, kept in dataset order.
      const std::vector<int64_t> order = data::random_permutation(
          static_cast<int64_t>(split_.train.size()), 20260102, data::DataStream::kValidation, 1);
      std::vector<int64_t> subset;
      for (int64_t i = 0; i < cfg_.data.train_examples; ++i) {
        subset.push_back(
            split_.train[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])]);
      }
      std::sort(subset.begin(), subset.end());
      split_.train = std::move(subset);
    }
    if (static_cast<int64_t>(split_.train.size()) < cfg_.train.batch_size) {
      fail("{}: train.batch_size {} exceeds the {} training examples", source,
           cfg_.train.batch_size, split_.train.size());
    }
    Generator init(cfg_.train.model_seed);
    model_ = models::build_model(config_, shape_of(*train_set_), init);
    model_->to(device_);
    optimizer_ = optim::make_optimizer(cfg_.optimizer, model_->named_parameters());
    schedule_ = std::make_unique<optim::Schedule>(
        optim::make_schedule(cfg_.schedule, cfg_.learning_rate, cfg_.train.max_train_steps));
    clipper_ = std::make_unique<optim::GradientClipper>(cfg_.clip);
    if (cfg_.ema.decay > 0) {
      ema_ =
          std::make_unique<optim::ExponentialMovingAverage>(model_->named_parameters(), cfg_.ema);
    }
    prepare_directory(source);
  }

  RunSummary run();

 private:
  RunSummary run_training();
  void prepare_directory(const std::string& source);
  void resume(const std::string& source);
  void restore(const CheckpointFiles& checkpoint);
  void save_checkpoint();
  void log_line(json line);
  // The unclipped gradient norm of every step since the last log step (host reads).
  std::vector<double> read_step_norms();
  void record_eval(const Evaluation& val);
  void write_summary(const RunSummary& summary);
  double evaluate_split(std::vector<int64_t> indices,
                        const std::shared_ptr<const data::ImageDataset>& ds, Evaluation* out);

  const config::Config& config_;
  TrainConfig cfg_;
  TrainOptions options_;
  std::ostream& out_;
  fs::path dir_;
  Device device_;
  std::shared_ptr<const data::ImageDataset> train_set_, test_set_;
  data::SplitIndices split_;
  std::shared_ptr<nn::Module> model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::Schedule> schedule_;
  std::unique_ptr<optim::GradientClipper> clipper_;
  std::unique_ptr<optim::ExponentialMovingAverage> ema_;

  int64_t step_ = 0;  // steps completed
  data::LoaderState loader_state_;
  double initial_loss_ = NAN;       // the loss of the first batch, before any update
  std::vector<Tensor> step_norms_;  // unclipped gradient norms of the steps since the last log
  std::vector<BestEntry> best_;
  double last_val_error_ = -1;
  double throughput_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Entries a run directory may hold before its config.toml exists: what a run killed while it
// was creating the directory leaves behind. config.toml is written last.
bool holds_no_run_yet(const fs::path& dir, std::string* other) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool empty_dir = (name == "checkpoints" || name == "best") && e.is_directory(ec) &&
                           fs::is_empty(e.path(), ec);
    const bool leftover = name == "metrics.jsonl" || name.ends_with(".tmp");
    if (!empty_dir && !leftover) {
      *other = e.path().string();
      return false;
    }
  }
  return true;
}

// Removes the files in best/ that `best` does not list.
void remove_unlisted_best(const fs::path& best_dir, const std::vector<BestEntry>& best) {
  for (const auto& e : fs::directory_iterator(best_dir)) {
    const std::string name = e.path().filename().string();
    const bool listed = std::any_of(best.begin(), best.end(), [&](const BestEntry& b) {
      return name == step_name(b.step) + ".safetensors";
    });
    if (!listed) fs::remove(e.path());
  }
}

void Run::prepare_directory(const std::string& source) {
  const fs::path config_file = dir_ / "config.toml";
  if (options_.resume && fs::exists(config_file)) return resume(source);
  if (options_.resume && fs::exists(dir_)) {
    // --resume is safe on every start: a directory with no run yet starts the run.
    std::string other;
    if (!holds_no_run_yet(dir_, &other)) {
      fail(
          "--resume: {} holds no run (no config.toml) but is not empty ({}); choose another "
          "--out",
          dir_.string(), other);
    }
    for (const auto& e : fs::directory_iterator(dir_)) fs::remove_all(e.path());
  } else if (!options_.resume && fs::exists(dir_) && !fs::is_empty(dir_)) {
    fail(
        "run directory {} already exists and is not empty (use --resume to continue it, or "
        "choose another --out)",
        dir_.string());
  }
  if (options_.resume)
    out_ << fmt::format("--resume: no run in {} yet; starting it\n", dir_.string());
  fs::create_directories(dir_ / "checkpoints");
  fs::create_directories(dir_ / "best");
  write_text_atomic(dir_ / "metrics.jsonl", "");
  write_text_atomic(config_file, config_.to_toml());  // last: from here on the run exists
}

void Run::resume(const std::string& source) {
  const fs::path config_file = dir_ / "config.toml";
  std::ifstream in(config_file);
  std::stringstream stored;
  stored << in.rdbuf();
  if (stored.str() != config_.to_toml()) {
    std::string differences;
    try {
      differences = config_differences(resolve_text(stored.str(), config_file.string()), config_);
    } catch (const std::exception& e) {
      differences = fmt::format("its config.toml does not resolve: {}", e.what());
    }
    if (!differences.empty()) {
      fail(
          "--resume: the resolved config of {} differs from the run in {}: {}; resume with the "
          "same config and --set overrides",
          source, dir_.string(), differences);
    }
  }
  if (fs::exists(dir_ / "summary.json")) {
    const json s = read_json(dir_ / "summary.json");
    if (s.value("status", "") == "completed") {
      fail("--resume: the run in {} already completed", dir_.string());
    }
    fs::remove(dir_ / "summary.json");
  }
  // The newest checkpoint that reads whole and checks out; a bad one is moved aside (never
  // chosen again, kept for a look) and the previous one tried.
  fs::path restored;
  for (const fs::path& ckpt : checkpoints_newest_first(dir_ / "checkpoints")) {
    try {
      restore(read_checkpoint(ckpt));
      restored = ckpt;
      break;
    } catch (const std::exception& e) {
      const fs::path aside = ckpt.string() + ".corrupt";
      fs::remove_all(aside);
      fs::rename(ckpt, aside);
      out_ << fmt::format(
          "--resume: checkpoint {} is incomplete or corrupt, skipped (moved to {}): {}\n",
          ckpt.string(), aside.filename().string(), e.what());
    }
  }
  // best/ files of evaluations after the restored step (a kill came before their checkpoint),
  // and the temporary files of writes a kill interrupted.
  remove_unlisted_best(dir_ / "best", best_);
  for (const fs::path& folder : {dir_, dir_ / "checkpoints"}) {
    for (const auto& e : fs::directory_iterator(folder)) {
      if (e.path().filename().string().ends_with(".tmp")) fs::remove_all(e.path());
    }
  }
  // Keep metrics up to the restored step: a killed run may have logged past its checkpoint.
  std::ifstream metrics_in(dir_ / "metrics.jsonl", std::ios::binary);
  const std::string metrics(std::istreambuf_iterator<char>(metrics_in), {});
  write_text_atomic(dir_ / "metrics.jsonl",
                    metrics_up_to(metrics, step_, (dir_ / "metrics.jsonl").string()));
  if (!restored.empty()) {
    out_ << fmt::format("resumed from {} at step {}\n", restored.string(), step_);
  } else {
    out_ << fmt::format("--resume: no usable checkpoint in {} yet; starting from step 0\n",
                        (dir_ / "checkpoints").string());
  }
}

// Applies a checkpoint that read_checkpoint checked. Replaces every piece of restored state, so
// a failure half way is repaired by restoring an older checkpoint over it.
void Run::restore(const CheckpointFiles& ckpt) {
  checkpoint::load_into(ckpt.model, model_->state(), "model");
  auto with_prefix = [&](const std::string& prefix) {
    std::vector<nn::NamedTensor> out;
    for (const auto& [name, t] : ckpt.state_tensors.tensors) {
      if (name.starts_with(prefix)) out.emplace_back(name.substr(prefix.size()), t);
    }
    return out;
  };
  optimizer_->load_state_dict(with_prefix("optimizer/"));
  clipper_->load_state_dict(with_prefix("clip/"));
  if (ema_) ema_->load_state_dict(with_prefix("ema/"));
  const CheckpointState& s = ckpt.state;
  step_ = s.step;
  loader_state_.epoch = s.loader_epoch;
  loader_state_.next_batch = s.loader_next_batch;
  initial_loss_ = s.has_initial_loss ? s.initial_loss : NAN;
  last_val_error_ = s.last_val_error;
  best_ = s.best;
  auto gens = dropout_generators(*model_);
  for (const auto& g : s.dropout_rngs) {
    for (auto& [path, gen] : gens) {
      if (path == g.module) gen->set_state(g.seed, g.offset);
    }
  }
}

void Run::save_checkpoint() {
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"playbook.step", std::to_string(step_)},
                                                   {"playbook.config", config_.to_toml()}};
  std::vector<nn::NamedTensor> state;
  for (auto& [n, t] : optimizer_->state_dict()) state.emplace_back("optimizer/" + n, t);
  for (auto& [n, t] : clipper_->state_dict()) state.emplace_back("clip/" + n, t);
  if (ema_) {
    for (auto& [n, t] : ema_->state_dict()) state.emplace_back("ema/" + n, t);
  }
  CheckpointState s;
  s.step = step_;
  s.loader_epoch = loader_state_.epoch;
  s.loader_next_batch = loader_state_.next_batch;
  s.has_initial_loss = !std::isnan(initial_loss_);
  s.initial_loss = s.has_initial_loss ? initial_loss_ : 0;
  s.last_val_error = last_val_error_;
  s.best = best_;
  for (const auto& [path, gen] : dropout_generators(*model_)) {
    s.dropout_rngs.push_back({path, gen->seed(), gen->offset()});
  }
  write_checkpoint(dir_ / "checkpoints", step_, model_->state(), meta, state, s);
  remove_unlisted_best(dir_ / "best", best_);
  // Keep the newest keep_checkpoints.
  const std::vector<fs::path> all = checkpoints_newest_first(dir_ / "checkpoints");
  for (std::size_t i = static_cast<std::size_t>(cfg_.train.keep_checkpoints); i < all.size(); ++i) {
    fs::remove_all(all[i]);
  }
}

std::vector<double> Run::read_step_norms() {
  std::vector<double> out;
  for (const Tensor& n : step_norms_) {
    out.push_back(n.dtype() == DType::F64 ? n.item<double>()
                                          : static_cast<double>(n.item<float>()));
  }
  step_norms_.clear();
  return out;
}

void Run::log_line(json line) {
  std::ofstream out(dir_ / "metrics.jsonl", std::ios::app);
  out << line.dump() << "\n";
  if (!out.flush()) fail("cannot append to {}", (dir_ / "metrics.jsonl").string());
}

void Run::record_eval(const Evaluation& val) {
  last_val_error_ = val.error;
  const bool improves = static_cast<int64_t>(best_.size()) < cfg_.train.keep_best ||
                        val.error < best_.back().val_error;
  if (!improves) return;
  // The model (or its EMA, when evaluating with it) as evaluated goes to best/.
  const std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"playbook.step", std::to_string(step_)},
      {"playbook.val_error", fmt::format("{}", val.error)},
      {"playbook.config", config_.to_toml()}};
  checkpoint::save(dir_ / "best" / (step_name(step_) + ".safetensors"), model_->state(), meta);
  best_.push_back({step_, val.error});
  std::stable_sort(best_.begin(), best_.end(), [](const BestEntry& a, const BestEntry& b) {
    return a.val_error < b.val_error;
  });
  // The evicted file stays until the next checkpoint no longer lists it (save_checkpoint): a
  // run killed before then resumes from a checkpoint whose best/ list still names it.
  while (static_cast<int64_t>(best_.size()) > cfg_.train.keep_best) best_.pop_back();
}

void Run::write_summary(const RunSummary& summary) {
  auto optional = [](double v) { return v < 0 ? json(nullptr) : json(v); };
  json s;
  s["status"] = summary.status;
  s["steps"] = step_;
  if (!summary.reason.empty()) s["reason"] = summary.reason;
  if (summary.status == "diverged") s["diverged_at_step"] = step_;
  s["initial_loss"] = std::isfinite(initial_loss_) ? json(initial_loss_) : json(nullptr);
  s["device"] = device_.str();
  s["best_step"] = best_.empty() ? json(nullptr) : json(best_.front().step);
  s["best_val_error"] = best_.empty() ? json(nullptr) : json(best_.front().val_error);
  s["final_val_error"] = optional(last_val_error_);
  if (summary.status == "completed") {
    s["test_error"] = summary.test_error;
    s["best_test_error"] = optional(summary.best_test_error);
    s["test_evaluations"] = summary.test_evaluations;
  }
  s["examples_per_sec"] = throughput_;
  s["wall_seconds"] = summary.wall_seconds;
  const device::MemoryStats memory = device::memory_stats(device_);
  s["peak_memory_bytes"] = memory.peak_allocated_bytes;
  s["memory_limit_bytes"] = memory.cap_bytes;
  s["model"] = model_->describe();
  s["parameters"] = model_->num_parameters();
  s["optimizer"] = optimizer_->to_json();
  s["schedule"] = schedule_->to_json();
  s["clip"] = clipper_->to_json();
  s["ema"] = ema_ ? ema_->to_json() : json(nullptr);
  s["config"] = config_json(config_);
  write_text_atomic(dir_ / "summary.json", s.dump(2) + "\n");
}

RunSummary Run::run() {
  try {
    return run_training();
  } catch (const OutOfMemoryError& e) {
    // Out of memory is an outcome of these hyperparameters (a batch too large for the device),
    // recorded like a divergence; the error still ends the command (exit code 4).
    RunSummary summary;
    summary.status = "out_of_memory";
    summary.steps = step_;
    summary.reason = e.what();
    summary.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    write_summary(summary);
    throw;
  }
}

RunSummary Run::run_training() {
  RunSummary summary;
  out_ << fmt::format("{} on {}: {} parameters; {} train / {} validation / {} test examples\n",
                      model_->describe(), device_.str(), model_->num_parameters(),
                      split_.train.size(), split_.validation.size(), test_set_->count);
  // One short line per section; the full detail is in config.toml and summary.json.
  auto numbers = [](const std::map<std::string, double>& hp) {
    std::string out;
    for (const auto& [k, v] : hp) out += fmt::format(" {}={:g}", k, v);
    return out;
  };
  std::size_t excluded = 0;
  for (std::size_t i = 0; i < optimizer_->parameters().size(); ++i) {
    excluded += optimizer_->decays(i) ? 0 : 1;
  }
  out_ << fmt::format("optimizer: {}{}{}\n", optimizer_->name(),
                      numbers(optimizer_->hyperparameters()),
                      excluded ? fmt::format(" (no weight decay on {} of {} tensors)", excluded,
                                             optimizer_->parameters().size())
                               : "");
  out_ << fmt::format("schedule: {}{}\n", schedule_->name(), numbers(schedule_->hyperparameters()));
  if (cfg_.clip.max_norm > 0 || ema_) {
    out_ << fmt::format("clip: max_norm={:g} ({}); ema: {}\n", cfg_.clip.max_norm,
                        cfg_.clip.target == optim::ClipTarget::kUpdate ? "update" : "gradient",
                        ema_ ? fmt::format("decay={:g}", cfg_.ema.decay) : "off");
  }

  set_nvtx_enabled(cfg_.train.nvtx != "off");
  // The input: the loader's batches, collated into pinned buffers when they go to a GPU; or,
  // for `playbook profile`, one batch of random inputs of the same shapes and classes, made on
  // the device once (no loader: the compute alone).
  std::optional<data::DataLoader> loader;
  Tensor fixed_x, fixed_y, fixed_targets;
  if (options_.device_synthetic_input) {
    Generator gen(cfg_.train.data_seed);
    const models::DataShape shape = shape_of(*train_set_);
    fixed_x = normal(Shape{cfg_.train.batch_size, shape.channels, shape.height, shape.width}, 0.0,
                     1.0, gen, TensorOptions{}.with_device(device_));
    std::vector<int32_t> labels(static_cast<std::size_t>(cfg_.train.batch_size));
    for (auto& l : labels)
      l = static_cast<int32_t>(gen.below(static_cast<uint64_t>(shape.num_classes)));
    const Tensor host_labels = from_vector<int32_t>(labels, Shape{cfg_.train.batch_size},
                                                    TensorOptions{}.with_dtype(DType::I32));
    fixed_y = host_labels.to(device_);
    fixed_targets = one_hot(host_labels, shape.num_classes).to(device_);
  } else {
    data::LoaderConfig lc = data::LoaderConfig::training(
        cfg_.train.batch_size, cfg_.train.data_seed,
        [&] {
          data::AugmentConfig a = data::default_augment(train_set_->name, true);
          a.crop_padding = cfg_.data.crop_padding;
          a.horizontal_flip = cfg_.data.horizontal_flip;
          return a;
        }(),
        cfg_.data.workers);
    lc.prefetch = cfg_.data.prefetch;
    lc.example_delay_us = cfg_.data.example_delay_us;
    lc.pin_memory = device_.is_cuda();
    loader.emplace(train_set_, split_.train, lc, loader_state_);
  }
  // A host tensor from the loader's pool on the device: an asynchronous copy on the copy stream
  // that the compute stream waits for; its buffer is reused once the copy is done (no host wait).
  auto stage = [&](const Tensor& host) {
    device::DeviceCopy copied = device::to_device_async(host, device_);
    if (copied.done.defined()) loader->buffer_pool().record_event(host, std::move(copied.done));
    return copied.tensor;
  };
  const TensorOptions on_device = TensorOptions{}.with_device(device_);
  Tensor loss_sum = zeros({}, on_device);
  int64_t window_steps = 0;
  double window_wait = 0;
  StepPhases phases(device_);
  auto window_start = std::chrono::steady_clock::now();
  ProgressLine progress(cfg_.train.max_train_steps, cfg_.train.log_every, out_, step_);
  model_->train();

  // No host-device synchronisation inside a step: the loss, the gradient norms and the phase
  // timings stay on the device until a log step reads them (and the loss of step 1, once).
  std::string status = "completed";
  while (step_ < cfg_.train.max_train_steps) {
    const int64_t step = step_ + 1;
    const NvtxRange step_range("step", step);
    std::optional<data::Batch> batch;
    if (loader) {
      auto phase = phases.scope(Phase::kDataWait, step);
      batch = loader->next();
      window_wait += batch->wait_seconds;
    }
    Tensor x = fixed_x, labels = fixed_y, targets = fixed_targets;
    if (batch) {
      auto phase = phases.scope(Phase::kH2D, step);
      x = stage(batch->images);
      if (cfg_.train.loss == "mse") {
        targets = stage(one_hot(batch->labels, train_set_->num_classes, &loader->buffer_pool()));
      } else {
        labels = stage(batch->labels);
      }
    }
    if (summary.input_shape.empty()) {
      const auto dims = x.shape().dims();
      summary.input_shape.assign(dims.begin(), dims.end());
    }
    Tensor loss;
    {
      auto phase = phases.scope(Phase::kForward, step);
      optimizer_->zero_grad();
      const Tensor logits = (*model_)(x);
      loss = cfg_.train.loss == "mse"
                 ? ops::mse_loss(logits, targets)
                 : ops::softmax_cross_entropy(logits, labels, Tensor{}, cfg_.train.label_smoothing);
      if (std::isnan(initial_loss_)) {
        // The reference of divergence detection: the loss before the first update (one host
        // read, at the first step only). A run already far above it at its first log step has
        // diverged, however its later steps behave.
        initial_loss_ = static_cast<double>(loss.item<float>());
      }
    }
    {
      auto phase = phases.scope(Phase::kBackward, step);
      loss.backward();
    }
    const double lr = schedule_->learning_rate(step_);
    {
      auto phase = phases.scope(Phase::kOptimizer, step);
      clipper_->step(*optimizer_, lr);  // global norm -> clip factor -> fused update(lr, factor)
      // A copy on the device (stream-ordered, no host wait), read at the log step.
      step_norms_.push_back(clipper_->grad_norm().clone());
      {
        autograd::NoGradGuard no_grad;
        ops::add_(loss_sum, loss.detach());
      }
      if (ema_) ema_->update();
    }
    batch.reset();  // its buffers go back to the pool (after their copies)
    ++step_;
    ++window_steps;
    if (loader) loader_state_ = loader->state();

    if (step_ % cfg_.train.log_every == 0 || step_ == cfg_.train.max_train_steps) {
      const double train_loss = loss_sum.item<float>() / static_cast<double>(window_steps);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      throughput_ =
          static_cast<double>(window_steps * cfg_.train.batch_size) / std::max(seconds, 1e-9);
      json line = {{"step", step_},
                   {"lr", lr},
                   {"train_loss", train_loss},
                   {"grad_norm", clipper_->read_grad_norm()},
                   {"grad_norms", read_step_norms()},
                   {"clipped_fraction", clipper_->read_stats().clipped_fraction},
                   {"examples_per_sec", throughput_},
                   {"data_wait_fraction", window_wait / std::max(seconds, 1e-9)}};
      const std::array<double, kPhaseCount> phase_seconds = phases.take();
      json& per_phase = line["phase_seconds"] = json::object();
      for (int p = 0; p < kPhaseCount; ++p) per_phase[kPhaseNames[p]] = phase_seconds[p];
      const bool diverged = !std::isfinite(train_loss) || !std::isfinite(initial_loss_) ||
                            train_loss > cfg_.train.divergence_factor * initial_loss_;
      // With data.validation_size = 0 there is no validation: nothing is logged for it.
      const bool eval_now =
          !diverged && !split_.validation.empty() &&
          (step_ % cfg_.train.eval_every == 0 || step_ == cfg_.train.max_train_steps);
      if (eval_now) {
        const NvtxRange eval_range("eval", step_);
        if (ema_) ema_->swap();
        const Evaluation val = evaluate(*model_, train_set_, split_.validation,
                                        cfg_.train.eval_batch_size, cfg_.data.workers, device_);
        line["val_loss"] = val.loss;
        line["val_error"] = val.error;
        if (val.examples > 0) record_eval(val);
        if (ema_) ema_->swap();
      }
      log_line(line);
      progress.step(step_, train_loss, window_steps * cfg_.train.batch_size,
                    fmt::format("  |g| {:.3g}{}", line["grad_norm"].get<double>(),
                                eval_now ? fmt::format("  val_loss {:.4f}  val_error {:.2f}%",
                                                       line["val_loss"].get<double>(),
                                                       100 * line["val_error"].get<double>())
                                         : ""));
      if (diverged) {
        status = "diverged";
        summary.reason = fmt::format("diverged at step {}", step_);
        out_ << fmt::format(
            "diverged at step {}: train loss {} (before the first update {:.4g}, "
            "limit {}x)\n",
            step_, train_loss, initial_loss_, cfg_.train.divergence_factor);
        break;
      }
      loss_sum = zeros({}, on_device);
      window_steps = 0;
      window_wait = 0;
      window_start = std::chrono::steady_clock::now();
      if (step_ % cfg_.train.checkpoint_every == 0 || step_ == cfg_.train.max_train_steps) {
        const NvtxRange checkpoint_range("checkpoint", step_);
        save_checkpoint();
      }
    }
  }

  summary.status = status;
  summary.steps = step_;
  summary.examples_per_sec = throughput_;
  if (status == "completed" && options_.final_evaluation) {
    if (ema_) ema_->swap();
    const Evaluation test = evaluate(*model_, test_set_, data::iota_indices(test_set_->count),
                                     cfg_.train.eval_batch_size, cfg_.data.workers, device_);
    summary.test_error = test.error;
    summary.test_evaluations = 1;
    if (ema_) ema_->swap();
    if (!best_.empty()) {
      const BestEntry best = best_.front();
      summary.best_step = best.step;
      summary.best_val_error = best.val_error;
      if (best.step == step_) {
        // Retrospective checkpoint selection picked the final model (best/ holds what validation
        // saw, the EMA when there is one, as evaluated above): one test-set pass serves both.
        summary.best_test_error = summary.test_error;
      } else {
        // Retrospective checkpoint selection: the best validation checkpoint on the test set.
        ++summary.test_evaluations;
        Generator init(cfg_.train.model_seed);
        auto best_model = models::build_model(config_, shape_of(*train_set_), init);
        best_model->to(device_);
        checkpoint::load_into(
            checkpoint::load(dir_ / "best" / (step_name(best.step) + ".safetensors")),
            best_model->state(), "model");
        summary.best_test_error =
            evaluate(*best_model, test_set_, data::iota_indices(test_set_->count),
                     cfg_.train.eval_batch_size, cfg_.data.workers, device_)
                .error;
      }
    }
    summary.final_val_error = last_val_error_;
  }
  summary.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  write_summary(summary);
  return summary;
}

}  // namespace

RunSummary train(const config::Config& config, const std::string& source,
                 const TrainOptions& options) {
  Run run(config, source, options);
  return run.run();
}

EvalResult evaluate_checkpoint(const fs::path& path, const std::string& split,
                               const fs::path& data_dir, const std::string& device_text) {
  const checkpoint::Loaded loaded = checkpoint::load(path);
  const auto it = loaded.metadata.find("playbook.config");
  if (it == loaded.metadata.end()) {
    fail("{}: no playbook.config metadata (not a checkpoint written by playbook train)",
         path.string());
  }
  const config::Config config = resolve_text(it->second, path.string() + " (embedded config)");
  TrainConfig cfg = train_config(config);
  if (!data_dir.empty()) cfg.data.dir = data_dir;
  if (split != "test" && split != "validation") {
    fail("eval: split must be test or validation, got '{}'", split);
  }
  const Device device = pick_device(device_text);
  auto train_set = load_split(cfg.data, "train");
  Generator init(cfg.train.model_seed);
  auto model = models::build_model(config, shape_of(*train_set), init);
  model->to(device);
  checkpoint::load_into(loaded, model->state(), "model");
  Evaluation e;
  if (split == "test") {
    auto test = load_split(cfg.data, "test");
    e = evaluate(*model, test, data::iota_indices(test->count), cfg.train.eval_batch_size,
                 cfg.data.workers, device);
  } else {
    const auto s = data::carve_validation(train_set->count, cfg.data.validation_size, 20260101);
    e = evaluate(*model, train_set, s.validation, cfg.train.eval_batch_size, cfg.data.workers,
                 device);
  }
  return {e.loss, e.error, e.examples};
}

}  // namespace pb::train
