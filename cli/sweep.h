#pragma once
// The procedure subcommands of `playbook` (tuning/procedures/sweep.h; README "Procedures"):
//   playbook sweep batch-size CONFIG [--sizes 16,32,...|--min 16 --max N] [--steps K]
//   playbook sweep lr CONFIG [--min X --max Y --trials N] [--steps N] [--fit-train LOSS]
//   playbook sweep warmup CONFIG --unstable-lr X [--factor 10] [--warmups 10,100,...]
//   playbook sweep clip CONFIG [--percentile 90] [--steps N] [--verify]
//   playbook sweep verdict STUDY_DIR          (the verdict of a sweep's study, again)
// Common options: --set KEY=VALUE (kept in the study), --dir STUDY_DIR (default
// studies/sweep_<kind>_<config stem>), --workers N, --devices cpu|cuda:0,cuda:1. Running the same
// command again resumes the study. Registered on the app before parsing; run() handles the one
// that was given.
#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

namespace pb::cli {

class SweepCommands {
 public:
  explicit SweepCommands(CLI::App& app);
  // The exit code when a sweep subcommand was given; nullopt otherwise.
  std::optional<int> run();

 private:
  CLI::App* sweep_ = nullptr;
  CLI::App* batch_ = nullptr;
  CLI::App* lr_ = nullptr;
  CLI::App* warmup_ = nullptr;
  CLI::App* clip_ = nullptr;
  CLI::App* verdict_ = nullptr;
  std::string config_, dir_, devices_, sizes_, warmups_;
  std::vector<std::string> overrides_;
  int workers_ = 1, trials_ = 9;
  int64_t min_size_ = 16, max_size_ = 0, steps_ = 0;
  double min_lr_ = 0, max_lr_ = 0, unstable_lr_ = 0, factor_ = 10, percentile_ = 90;
  double fit_train_ = -1;
  bool verify_ = false;
};

}  // namespace pb::cli
