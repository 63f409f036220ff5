// `playbook profile` (profile.h).
#include "cli/profile.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "runtime/config/config.h"
#include "runtime/device/errors.h"
#include "train/config.h"
#include "train/profile.h"

namespace pb::cli {
namespace fs = std::filesystem;

ProfileCommand::ProfileCommand(CLI::App& app) {
  profile_ = app.add_subcommand(
      "profile",
      "Input-bound or compute-bound? Real data vs inputs already on the device, per-phase step "
      "times, the nsys command");
  profile_->add_option("config", config_file_, "The training config (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  profile_->add_option("--steps", steps_, "Measured steps of each run")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}))
      ->capture_default_str();
  profile_->add_option("--warmup", warmup_, "Warm-up steps before measuring (also the log window)")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}))
      ->capture_default_str();
  profile_->add_option("--batch-size", batch_size_, "train.batch_size (default: the config's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  profile_->add_option("--set", overrides_, "Override a config key: --set data.workers=4")
      ->allow_extra_args(false);
  profile_->add_option("--device", device_, "cpu, cuda or cuda:N (default: the config's)");
  profile_->add_option("--json", json_out_,
                       "Write the result here (default: runs/profile/<config stem>.json)");
}

std::optional<int> ProfileCommand::run() {
  if (!profile_->parsed()) return std::nullopt;
  try {
    train::ProfileOptions o;
    o.steps = steps_;
    o.warmup_steps = warmup_;
    o.overrides = overrides_;
    o.device_override = device_;
    if (batch_size_ > 0) {
      o.overrides.push_back(fmt::format("train.batch_size={}", batch_size_));
      // The evaluation batch may not be smaller than the training batch.
      const config::Config base = train::resolve(config_file_, overrides_);
      if (std::get<int64_t>(base.value("train.eval_batch_size")) < batch_size_) {
        o.overrides.push_back(fmt::format("train.eval_batch_size={}", batch_size_));
      }
    }
    fmt::print("profiling {}: {} warm-up + {} measured steps, real data then data on the device\n",
               config_file_, warmup_, steps_);
    std::fflush(stdout);
    const train::ProfileResult r = train::profile(config_file_, o);
    fmt::print("{}", r.to_text());
    const fs::path out = json_out_.empty() ? fs::path("runs") / "profile" /
                                                 (fs::path(config_file_).stem().string() + ".json")
                                           : fs::path(json_out_);
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    std::ofstream f(out);
    f << r.to_json().dump(2) << "\n";
    if (!f.flush()) {
      fmt::print(stderr, "playbook: error: cannot write {}\n", out.string());
      return 1;
    }
    fmt::print("written: {}\n", out.string());
    return 0;
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 1;
  }
}

}  // namespace pb::cli
