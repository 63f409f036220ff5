#pragma once
// `playbook demo-mlp`: trains an MLP on Fashion-MNIST with plain SGD on the CPU and reports the
// test accuracy. It is the project's first real end-to-end job, kept until the trainer
// (runtime/train) and `playbook train` replace it.
#include <cstdint>
#include <string>
#include <vector>

namespace pb::cli {

struct MlpDemoOptions {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t steps = 3000;
  int64_t batch_size = 128;
  double learning_rate = 0.1;
  uint64_t seed = 0;
  std::vector<int64_t> hidden = {256, 128};
  int64_t validation_size = 5000;
  int64_t eval_every = 1000;
  int64_t log_every = 100;
};

// Returns the process exit code; prints progress and results to stdout.
int run_mlp_demo(const MlpDemoOptions& options);

}  // namespace pb::cli
