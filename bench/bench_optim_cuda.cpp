// The fused optimizer update over a ResNet-50 parameter set, against the device copy bandwidth.
//
// ResNet-50 (torchvision layout): 161 parameter tensors, 25,557,032 parameters: conv1, 16
// bottleneck blocks of [3, 4, 6, 3] (1x1, 3x3, 1x1 convolutions with batch-norm scale and shift,
// a 1x1 downsample in the first block of each stage) and the 1000-way fc. Each role (param,
// grad, slots) is one allocation carved into 256-byte aligned tensors, as a caching allocator
// would place them; the working set (716 MB for Adam) is far larger than any L2.
//
// Bytes counted per parameter (what the update must move at least once):
//   adam, nadam, adamw, rmsprop  read param, grad, m, v; write param, m, v   7 x 4 = 28 B
//   sgd                          read param, grad; write param               3 x 4 = 12 B
//   momentum                     read param, grad, v; write param, v         5 x 4 = 20 B
//   lamb (two launches)          norms pass 4 reads + 2 writes, update pass 3 reads + 1 write
//                                                                            10 x 4 = 40 B
// GB/s = bytes / time; copy_frac = GB/s / copy GB/s (pb::bench::copy_bandwidth_gbs(), a 1 GiB
// device-to-device copy in the same process, counting read + write). Target for adam and nadam:
// copy_frac >= 0.9. The per-tensor baseline runs the same kernel once per tensor (161 launches)
// to show what the multi-tensor launch saves; adam_clipped passes a device gradient scale (the
// fused clipping path). bench/pytorch/fused_adam.py measures torch.optim.Adam(fused=True) on the
// same parameter count with the same byte count.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/cuda/check.h"
#include "kernels/optim.h"

namespace pb::bench {
namespace {

using kernels::OptimRule;

// Element counts of ResNet-50's parameters, in torchvision's order.
std::vector<int64_t> resnet50_parameter_sizes() {
  std::vector<int64_t> sizes;
  auto conv = [&](int64_t out, int64_t in, int64_t k) { sizes.push_back(out * in * k * k); };
  auto bn = [&](int64_t c) {
    sizes.push_back(c);  // weight (gamma)
    sizes.push_back(c);  // bias (beta)
  };
  conv(64, 3, 7);
  bn(64);
  int64_t in = 64;
  const int64_t blocks[4] = {3, 4, 6, 3};
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t w = widths[stage];
    for (int64_t b = 0; b < blocks[stage]; ++b) {
      conv(w, in, 1);
      bn(w);
      conv(w, w, 3);
      bn(w);
      conv(4 * w, w, 1);
      bn(4 * w);
      if (b == 0) {
        conv(4 * w, in, 1);  // downsample
        bn(4 * w);
      }
      in = 4 * w;
    }
  }
  sizes.push_back(1000 * 2048);  // fc.weight
  sizes.push_back(1000);         // fc.bias
  return sizes;
}

int64_t bytes_per_parameter(OptimRule rule) {
  switch (rule) {
    case OptimRule::kSgd:
      return 12;
    case OptimRule::kMomentum:
    case OptimRule::kNesterov:
      return 20;
    case OptimRule::kLars:
      return 28;
    case OptimRule::kLamb:
      return 40;
    default:
      return 28;
  }
}

// One role's buffer carved into tensors at 256-byte aligned offsets.
struct Carved {
  DeviceBuffer buffer;
  std::vector<float*> tensors;
};

Carved carve(const std::vector<int64_t>& sizes, uint64_t seed, float lo, float hi) {
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
  for (int64_t n : sizes) {
    offsets.push_back(total);
    total += (static_cast<std::size_t>(n) + 63) / 64 * 64;
  }
  Carved c{DeviceBuffer(total), {}};
  fill_uniform(c.buffer, seed, lo, hi);
  for (std::size_t off : offsets) c.tensors.push_back(c.buffer.get() + off);
  return c;
}

// Parameters, gradients, two slots and the tensor list of the whole model.
struct Model {
  std::vector<int64_t> sizes = resnet50_parameter_sizes();
  int64_t numel = 0;
  Carved param = carve(sizes, 1, -1.0f, 1.0f);
  Carved grad = carve(sizes, 2, -1.0f, 1.0f);
  Carved m = carve(sizes, 3, -0.1f, 0.1f);
  Carved v = carve(sizes, 4, 0.0f, 0.01f);
  std::vector<kernels::OptimTensor<float>> list;

  Model() {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      numel += sizes[i];
      kernels::OptimTensor<float> t;
      t.param = param.tensors[i];
      t.grad = grad.tensors[i];
      t.slot0 = m.tensors[i];
      t.slot1 = v.tensors[i];
      t.n = sizes[i];
      t.weight_decay = sizes[i] > 2048 ? 1e-4f : 0.0f;  // no decay on batch-norm and biases
      t.adapt = sizes[i] > 2048;
      list.push_back(t);
    }
  }
};

Model& model() {
  static Model* m = new Model();  // built once per process, kept for every benchmark
  return *m;
}

kernels::OptimStep step_for(OptimRule rule) {
  kernels::OptimStep s;
  s.rule = rule;
  s.t = 10;
  s.lr = 1e-4;
  s.momentum = 0.9;
  s.eps = 1e-8;
  return s;
}

void report(benchmark::State& state, OptimRule rule, int64_t numel, int64_t tensors) {
  const double bytes = static_cast<double>(bytes_per_parameter(rule) * numel);
  state.counters["GB/s"] =
      benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["params"] = static_cast<double>(numel);
  state.counters["tensors"] = static_cast<double>(tensors);
  state.counters["copy_GB/s"] = copy_bandwidth_gbs();
}

// copy_frac needs the measured rate: set after the timing loop from the manual times.
void finish(benchmark::State& state, OptimRule rule, int64_t numel, double total_seconds) {
  if (state.iterations() == 0 || total_seconds <= 0.0) return;
  const double gbs = static_cast<double>(bytes_per_parameter(rule) * numel) /
                     (total_seconds / static_cast<double>(state.iterations())) / 1e9;
  state.counters["copy_frac"] = gbs / copy_bandwidth_gbs();
}

// Times fn per iteration with events (like run_timed), returning the total seconds.
template <typename Fn>
double timed_loop(benchmark::State& state, Fn&& fn) {
  for (int i = 0; i < 3; ++i) fn();  // warm-up
  PB_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  PB_CUDA_CHECK(cudaEventCreate(&start));
  PB_CUDA_CHECK(cudaEventCreate(&stop));
  double total = 0.0;
  for (auto _ : state) {
    PB_CUDA_CHECK(cudaEventRecord(start, nullptr));
    fn();
    PB_CUDA_CHECK(cudaEventRecord(stop, nullptr));
    PB_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PB_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
    total += ms / 1e3;
  }
  PB_CUDA_CHECK(cudaEventDestroy(start));
  PB_CUDA_CHECK(cudaEventDestroy(stop));
  return total;
}

// The fused multi-tensor update: one launch (two for lamb) over all 161 tensors.
void BM_FusedUpdate(benchmark::State& state, OptimRule rule, bool clipped) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  Model& mdl = model();
  const kernels::OptimStep s = step_for(rule);
  DeviceBuffer scale(1);  // a clipping factor of 0.5, read on the device
  const float half = 0.5f;
  PB_CUDA_CHECK(cudaMemcpy(scale.get(), &half, sizeof(float), cudaMemcpyHostToDevice));
  const int64_t ws = kernels::optim_cuda_workspace_bytes(
      rule, static_cast<int64_t>(mdl.list.size()), mdl.list.data());
  DeviceBuffer workspace(static_cast<std::size_t>((ws + 3) / 4));  // lamb: zeroed once
  if (ws > 0) PB_CUDA_CHECK(cudaMemset(workspace.get(), 0, workspace.bytes()));
  const int64_t count = static_cast<int64_t>(mdl.list.size());
  report(state, rule, mdl.numel, count);
  const double total = timed_loop(state, [&] {
    kernels::optim_update_cuda(nullptr, s, count, mdl.list.data(), clipped ? scale.get() : nullptr,
                               ws > 0 ? workspace.get() : nullptr);
  });
  finish(state, rule, mdl.numel, total);
}

// Baseline: the same kernel launched once per tensor (what a per-parameter loop costs).
void BM_PerTensorLaunches(benchmark::State& state, OptimRule rule) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  Model& mdl = model();
  const kernels::OptimStep s = step_for(rule);
  report(state, rule, mdl.numel, static_cast<int64_t>(mdl.list.size()));
  const double total = timed_loop(state, [&] {
    for (const kernels::OptimTensor<float>& t : mdl.list) {
      kernels::optim_update_cuda(nullptr, s, 1, &t, nullptr, nullptr);
    }
  });
  finish(state, rule, mdl.numel, total);
}

BENCHMARK_CAPTURE(BM_FusedUpdate, adam, OptimRule::kAdam, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, nadam, OptimRule::kNAdam, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, adamw, OptimRule::kAdamW, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, adam_clipped, OptimRule::kAdam, true)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, sgd, OptimRule::kSgd, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, momentum, OptimRule::kMomentum, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FusedUpdate, lamb, OptimRule::kLamb, false)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PerTensorLaunches, adam, OptimRule::kAdam)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pb::bench

BENCHMARK_MAIN();
