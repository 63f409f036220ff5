// The procedure subcommands; see sweep.h and tuning/procedures/sweep.h.
#include "cli/sweep.h"

#include <fmt/format.h>

#include <exception>
#include <fstream>
#include <iostream>

#include "cli/study.h"
#include "runtime/config/config.h"
#include "train/config.h"
#include "train/evaluate.h"
#include "tuning/procedures/sweep.h"
#include "tuning/process.h"
#include "tuning/study.h"
#include "tuning/worker.h"

namespace pb::cli {
namespace fs = std::filesystem;
namespace sweep = tuning::sweep;
namespace {

// The base config's values a sweep needs; the dataset is opened once for its shape.
sweep::Base read_base(const std::string& file, const std::vector<std::string>& overrides) {
  const config::Config c = pb::train::resolve(file, overrides);
  const pb::train::TrainConfig t = pb::train::train_config(c);
  sweep::Base b;
  b.config = fs::absolute(file).lexically_normal();
  b.overrides = overrides;
  b.max_train_steps = t.train.max_train_steps;
  b.batch_size = t.train.batch_size;
  b.eval_batch_size = t.train.eval_batch_size;
  b.log_every = t.train.log_every;
  b.learning_rate = t.learning_rate;
  b.has_validation = t.data.validation_size > 0;
  b.dataset = t.data.dataset;
  b.example_delay_us = t.data.example_delay_us;
  return b;
}

void read_shape(sweep::Base& b, const std::string& file) {
  const pb::train::TrainConfig t = pb::train::train_config(pb::train::resolve(file, b.overrides));
  const auto ds = pb::train::load_split(t.data, "train");
  b.shape = {ds->channels, ds->height, ds->width};
  b.classes = ds->num_classes;
  b.train_count = ds->count;
}

std::vector<int64_t> int_list(const std::string& s, const char* option) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(s)) {
    try {
      std::size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw config::ConfigError(fmt::format("{}: '{}' is not a whole number", option, item));
    }
  }
  return out;
}

enum class Verdict { None, Write, Print };

// Creates or reopens the sweep's study, runs its trials on the engine's workers, writes (and
// prints) the verdict.
int run_plan(const sweep::Plan& plan, const sweep::Base& base, std::string dir, int workers,
             const std::string& devices, Verdict verdict = Verdict::Print) {
  if (dir.empty()) dir = (fs::path("studies") / plan.name).string();
  const tuning::TrainRules rules = train_rules();
  const tuning::StudySpec spec = tuning::parse_study(plan.text, fs::path(dir) / "study.toml",
                                                     base.config.parent_path(), &rules);
  tuning::init_study(dir, spec);
  {
    std::ofstream out(fs::path(dir) / "sweep.json");
    out << plan.record.dump(2) << "\n";
  }
  install_stop_handlers();
  tuning::RunnerOptions opt;
  opt.study_dir = dir;
  opt.devices = split_list(devices);
  opt.workers = workers;
  opt.playbook = tuning::self_executable();
  opt.stop_requests = stop_requests();
  opt.out = &std::cout;
  const int rc = tuning::run_study_workers(spec, opt);
  if (verdict == Verdict::None) return rc;
  const sweep::Verdict v = sweep::analyse(dir);
  sweep::write_verdict(dir, v);
  if (verdict == Verdict::Print) {
    fmt::print("\n{}", v.text);
    fmt::print("verdict: {}/verdict.txt, {}/verdict.json\n", dir, dir);
  }
  return rc;
}

}  // namespace

SweepCommands::SweepCommands(CLI::App& app) {
  sweep_ = app.add_subcommand("sweep",
                              "The playbook's procedures as studies: batch-size, lr, warmup, clip "
                              "(see README: Procedures)");
  sweep_->require_subcommand(1);
  auto common = [&](CLI::App* c) {
    c->add_option("config", config_, "The training config (TOML)")
        ->required()
        ->check(CLI::ExistingFile);
    c->add_option("--set", overrides_, "Override a config key in every trial: --set k=v")
        ->allow_extra_args(false);
    c->add_option("--dir", dir_, "Study directory (default: studies/sweep_<kind>_<config>)");
    c->add_option("--workers", workers_, "Worker processes (trials in parallel)")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    c->add_option("--devices", devices_, "Comma-separated devices: cpu or cuda:0,cuda:1");
  };
  batch_ = sweep_->add_subcommand(
      "batch-size",
      "Throughput at doubling batch sizes, real data next to synthetic; largest feasible size");
  common(batch_);
  batch_->add_option("--sizes", sizes_, "Batch sizes, e.g. 16,32,64 (default: doubling)");
  batch_->add_option("--min", min_size_, "Smallest size when doubling")->capture_default_str();
  batch_->add_option("--max", max_size_, "Largest size when doubling (default: 8 x batch_size)");
  batch_->add_option("--steps", steps_, "Steps per trial (default 50; the first fifth is warm-up)");

  lr_ = sweep_->add_subcommand(
      "lr",
      "Constant-schedule learning-rate sweep: best, unstable_base_learning_rate, "
      "max_train_steps candidate");
  common(lr_);
  lr_->add_option("--min", min_lr_, "Smallest learning rate (default: base / 100)");
  lr_->add_option("--max", max_lr_, "Largest learning rate (default: base x 100)");
  lr_->add_option("--trials", trials_, "Points of the log-scale grid")
      ->check(CLI::Range(2, 1000))
      ->capture_default_str();
  lr_->add_option("--steps", steps_, "Steps per trial (default: the config's max_train_steps)");
  lr_->add_option("--fit-train", fit_train_,
                  "Target training loss: report the steps the fastest trial needed to reach it");

  warmup_ = sweep_->add_subcommand(
      "warmup", "Shortest warmup_steps that trains stably at factor x the unstable learning rate");
  common(warmup_);
  warmup_->add_option("--unstable-lr", unstable_lr_, "unstable_base_learning_rate (sweep lr)")
      ->required();
  warmup_->add_option("--factor", factor_, "base learning rate = factor x unstable")
      ->capture_default_str();
  warmup_->add_option("--warmups", warmups_,
                      "warmup_steps to try (default 10,100,1000,10000 up to 10% of "
                      "max_train_steps)");

  clip_ = sweep_->add_subcommand(
      "clip", "Clipping threshold from the unclipped gradient norms of every step");
  common(clip_);
  clip_->add_option("--percentile", percentile_, "Percentile of the norms")->capture_default_str();
  clip_->add_option("--steps", steps_, "Steps (default: the config's max_train_steps)");
  clip_->add_flag("--verify", verify_, "Then train once clipped at the threshold");

  verdict_ = sweep_->add_subcommand("verdict", "Analyse a sweep's study directory again");
  verdict_->add_option("study_dir", dir_, "The sweep's study directory")->required();
}

std::optional<int> SweepCommands::run() {
  if (!sweep_->parsed()) return std::nullopt;
  try {
    if (verdict_->parsed()) {
      const sweep::Verdict v = sweep::analyse(dir_);
      sweep::write_verdict(dir_, v);
      fmt::print("{}", v.text);
      return 0;
    }
    sweep::Base base = read_base(config_, overrides_);
    if (batch_->parsed()) {
      sweep::BatchSizeOptions o;
      if (!sizes_.empty()) {
        o.sizes = int_list(sizes_, "--sizes");
      } else {
        const int64_t max = max_size_ > 0 ? max_size_ : 8 * base.batch_size;
        for (int64_t b = min_size_; b <= max; b *= 2) o.sizes.push_back(b);
      }
      std::sort(o.sizes.begin(), o.sizes.end());
      for (int64_t b : o.sizes) {
        if (b < 1) throw config::ConfigError(fmt::format("--sizes: {} is not a batch size", b));
      }
      if (steps_ > 0) o.steps = steps_;
      read_shape(base, config_);
      return run_plan(sweep::batch_size_plan(base, o), base, dir_, workers_, devices_);
    }
    if (lr_->parsed()) {
      sweep::LrOptions o;
      o.min = min_lr_ > 0 ? min_lr_ : base.learning_rate / 100;
      o.max = max_lr_ > 0 ? max_lr_ : base.learning_rate * 100;
      o.trials = trials_;
      o.steps = steps_;
      if (fit_train_ >= 0) o.fit_train = fit_train_;
      return run_plan(sweep::lr_plan(base, o), base, dir_, workers_, devices_);
    }
    if (warmup_->parsed()) {
      sweep::WarmupOptions o;
      o.unstable_lr = unstable_lr_;
      o.factor = factor_;
      if (!warmups_.empty()) o.warmups = int_list(warmups_, "--warmups");
      return run_plan(sweep::warmup_plan(base, o), base, dir_, workers_, devices_);
    }
    if (clip_->parsed()) {
      sweep::ClipOptions o;
      o.percentile = percentile_;
      o.steps = steps_;
      o.verify = verify_;
      const sweep::Plan plan = sweep::clip_plan(base, o);
      const std::string dir = dir_.empty() ? (fs::path("studies") / plan.name).string() : dir_;
      int rc =
          run_plan(plan, base, dir, workers_, devices_, verify_ ? Verdict::Write : Verdict::Print);
      if (rc != 0 || !verify_) return rc;
      const sweep::Verdict first = sweep::analyse(dir);
      if (!first.json["threshold"].is_number()) {
        fmt::print("{}", first.text);
        return 1;
      }
      const double threshold = first.json["threshold"].get<double>();
      rc = run_plan(sweep::clip_verify_plan(base, o, threshold), base,
                    (fs::path(dir) / "verify").string(), workers_, devices_, Verdict::None);
      const sweep::Verdict v = sweep::analyse(dir);
      sweep::write_verdict(dir, v);
      fmt::print("\n{}verdict: {}/verdict.txt, {}/verdict.json\n", v.text, dir, dir);
      return rc;
    }
  } catch (const tuning::StudyError& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 2;
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 1;
  }
  return 1;
}

}  // namespace pb::cli
