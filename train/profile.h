#pragma once
// Is training input-bound? The playbook ("Optimizing the input pipeline") asks for a profiler
// before any remedy, and "Choosing the batch size" for the throughput per batch size: a plateau
// is worth diagnosing. profile() runs a training config twice after warm-up steps, with its real
// data pipeline and with one batch of random inputs of the same shapes and classes already on
// the device, and compares examples/s, with the per-phase time of a step (train/step_phases.h)
// and the share of time the step loop waited for data.
//
// classify_throughput() is the verdict alone, for callers with their own measurements (the
// batch-size sweep at a plateau):
//
//   const ThroughputVerdict v = classify_throughput(real_eps, synthetic_eps, data_wait_fraction);
//   if (v.input_bound) for (const auto& r : v.remedies) ...
#include <array>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config/config.h"
#include "train/step_phases.h"

namespace pb::train {

// Input-bound when real/synthetic examples/s is below min_ratio, or the step loop waited for
// data more than max_data_wait of the time.
struct InputBoundThresholds {
  double min_ratio = 0.8;
  double max_data_wait = 0.2;
};

struct ThroughputVerdict {
  bool input_bound = false;
  std::string verdict;                // "input-bound" | "compute-bound"
  double ratio = 0;                   // real / synthetic examples/s (0 when synthetic is 0)
  double data_wait_fraction = 0;      // of the real run
  std::vector<std::string> reasons;   // each threshold crossed (or none), with the numbers
  std::vector<std::string> remedies;  // input-bound: the playbook's remedies; else empty
};

ThroughputVerdict classify_throughput(double real_examples_per_sec,
                                      double synthetic_examples_per_sec, double data_wait_fraction,
                                      const InputBoundThresholds& thresholds = {});

// One measured run: the steps after warm-up.
struct ThroughputMeasurement {
  int64_t steps = 0;
  int64_t batch_size = 0;
  double seconds = 0;
  double examples_per_sec = 0;
  double data_wait_fraction = 0;
  std::array<double, kPhaseCount> phase_seconds_per_step{};  // kPhaseNames order
  std::vector<int64_t> input_shape;  // (B,C,H,W) of the inputs the run trained on
};

struct ProfileOptions {
  int64_t steps = 20;                  // measured steps (rounded up to a multiple of warmup_steps)
  int64_t warmup_steps = 5;            // not measured; also the logging window
  std::vector<std::string> overrides;  // --set, applied to the config first
  std::string device_override;         // empty: the config's train.device
  std::filesystem::path work_dir;      // where the two runs go (removed after); empty: a temp dir
  InputBoundThresholds thresholds;
  std::ostream* log = nullptr;  // progress of the two runs; nullptr: discarded
};

struct ProfileResult {
  ThroughputMeasurement real, synthetic;
  ThroughputVerdict verdict;
  std::vector<std::string> top_phases;  // of the real run, longest first
  std::string nsys_command;             // captures the same run with its NVTX ranges
  nlohmann::json to_json() const;
  std::string to_text() const;  // the report `playbook profile` prints
};

// Profiles the training config `file` (with options.overrides) as described at the top.
ProfileResult profile(const std::filesystem::path& file, const ProfileOptions& options);

}  // namespace pb::train
