#pragma once
// NVTX ranges of the training loop, in the `playbook` domain, for Nsight Systems:
//
//   step (payload: the step number, 1-based: the step being run)
//     data_wait   waiting for the loader's next batch
//     h2d         issuing the batch's host-to-device copy (copy stream; no host wait)
//     forward     the model and the loss
//     backward    the tape in reverse
//     optimizer   global norm, clipping, the fused update, EMA
//     eval        at eval steps: the validation pass
//     checkpoint  at checkpoint steps
//
// NVTX3 is header-only (the CUDA toolkit's nvtx3/nvToolsExt.h); without a profiler or an
// injection library attached (NVTX_INJECTION64_PATH) a range costs one branch. A build without
// the header compiles the same calls into no-ops. Ranges are pushed only while enabled
// (train.nvtx = "step"); the thread's stack of open ranges is kept either way, so tests can see
// which phase a call happens in.
#include <cstdint>
#include <string_view>

namespace pb::train {

// Whether this build emits NVTX ranges (the header was found).
bool nvtx_built_in();
// Turns the emission on or off for the process (the trainer sets it from train.nvtx).
void set_nvtx_enabled(bool on);
bool nvtx_enabled();

// One open range on this thread: its name (a string literal) and step payload.
struct OpenRange {
  const char* name = nullptr;
  int64_t step = 0;
};
// The innermost open range of this thread ({nullptr, 0}: none), and the outermost one.
OpenRange innermost_range();
OpenRange outermost_range();

// A range from construction to destruction. `name` must outlive it (a string literal).
class NvtxRange {
 public:
  NvtxRange(const char* name, int64_t step);
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  bool pushed_ = false;
};

}  // namespace pb::train
