#pragma once
// Per-phase time of training steps, without Nsight and on the CPU: the host waits for data
// (data_wait) on the steady clock; the device phases (h2d, forward, backward, optimizer) with
// CUDA events on a GPU (h2d on the copy stream, the rest on the compute stream: device time,
// read at log steps, when the host synchronises anyway) and with the steady clock on the CPU.
// Every phase is also an NVTX range (train/nvtx.h).
//
//   StepPhases phases(device);
//   { auto p = phases.scope(Phase::kForward, step); ... }   // forward of `step`
//   ... at a log step: const auto seconds = phases.take();  // per phase, since the last take
#include <array>
#include <chrono>
#include <cstdint>
#include <vector>

#include "runtime/core/device.h"
#include "runtime/device/cuda_device.h"
#include "train/nvtx.h"

namespace pb::train {

enum class Phase { kDataWait, kH2D, kForward, kBackward, kOptimizer };
inline constexpr int kPhaseCount = 5;
// The NVTX range and metrics.jsonl names, in step order.
inline constexpr std::array<const char*, kPhaseCount> kPhaseNames = {"data_wait", "h2d", "forward",
                                                                     "backward", "optimizer"};
static_assert(static_cast<int>(Phase::kOptimizer) + 1 == kPhaseCount, "a name for every phase");

class StepPhases {
 public:
  explicit StepPhases(Device device);

  // The NVTX range and the timing of one phase, from construction to destruction.
  class Scope {
   public:
    Scope(StepPhases& owner, Phase phase, int64_t step);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    StepPhases& owner_;
    Phase phase_;
    NvtxRange range_;
    std::chrono::steady_clock::time_point start_;
    int event_ = -1;  // index of the begin/end pair (GPU device phases)
  };
  Scope scope(Phase phase, int64_t step) { return Scope(*this, phase, step); }

  // Seconds per phase since the last take (or construction), in kPhaseNames order; reads the
  // device's timing events, so it synchronises with their streams (log steps only).
  std::array<double, kPhaseCount> take();

 private:
  bool device_timed(Phase phase) const;

  Device device_;
  std::array<double, kPhaseCount> host_seconds_{};
  struct Timed {
    Phase phase;
    device::Event begin, end;
  };
  std::vector<Timed> timed_;  // recorded since the last take
  std::vector<Timed> spare_;  // events to record again
};

}  // namespace pb::train
