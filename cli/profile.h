#pragma once
// The profile subcommand of `playbook`:
//   playbook profile CONFIG [--steps N] [--warmup W] [--batch-size B] [--set k=v]...
//                           [--device D] [--json FILE]
// runs the training config twice after W warm-up steps, with its real data pipeline and with
// random inputs of the same shapes and classes already on the device (train/profile.h), prints
// examples/s of both, their ratio, the per-phase time of a step, the data-wait share and the
// verdict (input-bound, with the playbook's remedies, or compute-bound, with the top phases),
// and the `nsys profile` command that captures the same run with its NVTX ranges; the same as
// JSON in FILE (default runs/profile/<config stem>.json). Exit codes: 0 measured (whatever the
// verdict); 2 a usage or configuration error; 1 any other error.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pb::cli {

class ProfileCommand {
 public:
  explicit ProfileCommand(CLI::App& app);
  // The exit code when `profile` was given; nullopt otherwise.
  std::optional<int> run();

 private:
  CLI::App* profile_ = nullptr;
  std::string config_file_, device_, json_out_;
  std::vector<std::string> overrides_;
  int64_t steps_ = 20, warmup_ = 5, batch_size_ = 0;
};

}  // namespace pb::cli
