// The `playbook` executable: one subcommand per job. Every error a user can cause ends in a
// one-line message and a non-zero exit code, never a crash. Exit codes of `playbook train`, which
// the study workers read: 0 completed; 1 any other error; 2 a usage or configuration error
// (nothing was created); 3 the loss diverged (summary.json says at which step); 4 out of device
// memory.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

#include "cli/profile.h"
#include "cli/report.h"
#include "cli/study.h"
#include "cli/sweep.h"
#include "runtime/config/config.h"
#include "runtime/core/device.h"
#include "runtime/core/error.h"
#include "runtime/device/cpu.h"
#include "runtime/device/errors.h"
#include "runtime/ops/op_table.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

constexpr int kExitConfigError = 2;  // CLI11 usage errors exit with 2 too (nothing was created)
constexpr int kExitOutOfMemory = 4;

int run_info() {
  fmt::print("playbook {}\n", PLAYBOOK_VERSION);
  fmt::print("CPU BLAS: {}\n", pb::device::cpu_blas_info());
#ifdef PB_WITH_CUDA
  fmt::print("CUDA backend: built in, {} device(s) visible\n", pb::cuda_device_count());
#else
  fmt::print("CUDA backend: not built (PLAYBOOK_CUDA=OFF or no nvcc)\n");
#endif
  fmt::print("ops ({}):\n", pb::kOpCount);
  for (const pb::OpSchema& op : pb::kOpSchemas) {
    fmt::print("  {:<22} {:<60} grad={} cuda={}\n", op.name, op.signature,
               op.differentiable ? "yes" : "no", op.cuda_kernel ? "yes" : "no");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "playbook: a C++/CUDA training runtime that automates the Deep Learning Tuning "
      "Playbook"};
  app.require_subcommand(1);

  app.add_subcommand("info", "Devices, build options and the op table");

  std::string config_file, out_dir, device, resume_dir;
  std::vector<std::string> overrides;
  bool resume = false;
  CLI::App* train_cmd = app.add_subcommand(
      "train", "Train a model from a TOML config into a run directory (exit 3: diverged)");
  train_cmd
      ->add_option("config", config_file,
                   "The training config (TOML), e.g. configs/resnet20_fashion_mnist.toml")
      ->required()
      ->check(CLI::ExistingFile);
  train_cmd
      ->add_option("--set", overrides, "Override a config key: --set optimizer.learning_rate=0.05")
      ->allow_extra_args(false);
  train_cmd->add_option("--device", device,
                        "cpu, cuda or cuda:N (default: the config's train.device)");
  train_cmd->add_option("--out", out_dir, "Run directory (default: runs/<config name>)");
  train_cmd->add_flag("--resume", resume, "Continue the run in --out from its latest checkpoint");
  int cpu_threads = 0;  // 0: the CPU kernels' default (kernels/cpu/parallel.h)
  train_cmd
      ->add_option("--threads", cpu_threads,
                   "CPU threads for GEMMs and CPU kernels (default: OMP_NUM_THREADS or "
                   "OPENBLAS_NUM_THREADS when set, else all cores)")
      ->check(CLI::Range(1, 4096));

  std::string checkpoint_file, split = "test", data_dir, eval_device = "auto";
  CLI::App* eval_cmd =
      app.add_subcommand("eval", "Evaluate a checkpoint written by playbook train");
  eval_cmd
      ->add_option("checkpoint", checkpoint_file,
                   "A .safetensors checkpoint (best/ or checkpoints/)")
      ->required()
      ->check(CLI::ExistingFile);
  eval_cmd->add_option("--split", split, "test or validation")->capture_default_str();
  eval_cmd->add_option("--data", data_dir, "Dataset directory (default: the one the run used)");
  eval_cmd->add_option("--device", eval_device, "auto, cpu, cuda or cuda:N")->capture_default_str();

  pb::cli::StudyCommands study_commands(app);
  pb::cli::ReportCommands report_commands(app);
  pb::cli::ProfileCommand profile_command(app);
  pb::cli::SweepCommands sweep_commands(app);
  // A usage error (unknown option, bad value) exits with 2 like a config error, after CLI11's
  // message; --help and --version exit 0.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (const auto rc = sweep_commands.run()) return *rc;
  if (const auto rc = profile_command.run()) return *rc;
  if (const auto rc = report_commands.run()) return *rc;  // first: it owns `study rerun`
  if (const auto rc = study_commands.run()) return *rc;
  try {
    if (app.got_subcommand("info")) return run_info();
    if (app.got_subcommand("train")) {
      if (cpu_threads > 0) pb::device::set_cpu_blas_threads(cpu_threads);
      const pb::config::Config config = pb::train::resolve(config_file, overrides);
      pb::train::TrainOptions options;
      options.out_dir = out_dir.empty() ? std::filesystem::path("runs") /
                                              std::filesystem::path(config_file).stem()
                                        : std::filesystem::path(out_dir);
      options.resume = resume;
      options.device_override = device;
      const pb::train::RunSummary s = pb::train::train(config, config_file, options);
      if (s.status == "diverged") {
        fmt::print("run diverged at step {}; see {}/summary.json\n", s.steps,
                   options.out_dir.string());
        return pb::train::kExitDiverged;
      }
      fmt::print("test accuracy: {:.2f}% (final model, step {})", 100 * (1 - s.test_error),
                 s.steps);
      if (s.best_step == s.steps) {
        fmt::print(" = best validation checkpoint");
      } else if (s.best_step >= 0) {
        fmt::print(", {:.2f}% (best validation checkpoint, step {})", 100 * (1 - s.best_test_error),
                   s.best_step);
      }
      fmt::print("\nrun directory: {}  ({:.0f} s, {:.0f} examples/s)\n", options.out_dir.string(),
                 s.wall_seconds, s.examples_per_sec);
      return 0;
    }
    if (app.got_subcommand("eval")) {
      const auto r = pb::train::evaluate_checkpoint(checkpoint_file, split, data_dir, eval_device);
      fmt::print("{} on {} examples: loss {:.4f}, error {:.2f}%, accuracy {:.2f}%\n", split,
                 r.examples, r.loss, 100 * r.error, 100 * (1 - r.error));
      return 0;
    }
  } catch (const pb::config::ConfigError& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return kExitConfigError;
  } catch (const pb::OutOfMemoryError& e) {
    fmt::print(stderr, "playbook: error: out of memory: {}\n", e.what());
    return kExitOutOfMemory;
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
