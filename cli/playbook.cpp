// The `playbook` executable: one subcommand per job. Every error a user can cause ends in a
// one-line message and a non-zero exit code, never a crash.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

#include "cli/demo_mlp.h"
#include "kernels/gemm.h"
#include "runtime/core/device.h"
#include "runtime/core/error.h"
#include "runtime/ops/op_table.h"

namespace {

int run_info() {
  fmt::print("playbook {}\n", PLAYBOOK_VERSION);
  fmt::print("CPU BLAS: {}\n", pb::kernels::cpu_blas_info());
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

  pb::cli::MlpDemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo-mlp", "Train an MLP on Fashion-MNIST with plain SGD (CPU) and report test accuracy");
  demo_cmd->add_option("--data", demo.data_dir, "Directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  demo_cmd->add_option("--steps", demo.steps, "Training steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  demo_cmd->add_option("--batch-size", demo.batch_size, "Examples per step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  demo_cmd->add_option("--lr", demo.learning_rate, "SGD learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  demo_cmd->add_option("--seed", demo.seed, "Model initialisation seed (data order: seed+1)")
      ->capture_default_str();
  demo_cmd->add_option("--hidden", demo.hidden, "Hidden layer widths")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  demo_cmd->add_option("--eval-every", demo.eval_every, "Validation every K steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  demo_cmd->add_option("--log-every", demo.log_every, "Progress line every K steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  try {
    if (app.got_subcommand("info")) return run_info();
    if (app.got_subcommand("demo-mlp")) return pb::cli::run_mlp_demo(demo);
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
