// Memory-bound CUDA kernels against the device copy bandwidth (and batch norm against cuDNN).
//
// Design
//   One benchmark per kernel and pass on ResNet-50-like shapes (batch 64), all far larger than
//   the 50 MB L2 so that every timed call streams from HBM:
//     batch norm    x (64,256,56,56) = 205 MB; train forward, train backward, for V = 64 (plain)
//                   and V = 32 (ghost, 2 groups); fused BN+ReLU forward; cuDNN's
//                   cudnnBatchNormalizationForwardTraining / cudnnBatchNormalizationBackward
//                   (CUDNN_BATCHNORM_SPATIAL) on the same tensor as the baseline
//     elementwise   n = 64*256*56*56: relu, add, add_relu, add_relu_backward, scale
//     pooling       max / avg 3x3 stride 2 pad 1, (64,64,112,112) -> (64,64,56,56), fwd + bwd;
//                   global average (64,2048,7,7) -> (64,2048), fwd + bwd
//     cross-entropy N = 65536, K = 1000, smoothing 0.1, weights: fwd + bwd
//     global L2 norm  the 161 parameter tensors of ResNet-50 (25.6M floats), one launch pair
//     sum           n = 64*256*56*56
//   Inputs are uniform random (never zeros). Timing: device events around each call after a
//   warm-up (UseManualTime), median of the iterations.
//   Counters:
//     GB/s             the fewest bytes the op must move (each input read once, each output
//                      written once; listed per benchmark) over the median time, 1e9 bytes/s
//     frac_of_copy_bw  GB/s over pb::bench::copy_bandwidth_gbs() (a 1 GiB device-to-device copy)
//     ratio_vs_cudnn   (batch norm) cuDNN's median time / ours on the same shape: > 1 is faster
//                      than cuDNN. For V = 32 the baseline is cuDNN's ordinary batch norm of the
//                      same tensor (cuDNN has no ghost batch norm); the bytes are the same.
//   Our batch norm train passes read their inputs twice (statistics first, then the output), so
//   frac_of_copy_bw near 2/3 (forward: 3 transfers for 2 counted) is the design's ceiling.
//
// Usage: pb_bench_memory_cuda [--benchmark_filter=BatchNorm] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/batchnorm.h"
#include "kernels/cuda/check.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/pool.h"
#include "kernels/reduce.h"

namespace {

using pb::bench::copy_bandwidth_gbs;
using pb::bench::DeviceBuffer;
using pb::bench::fill_uniform;
using pb::bench::have_device;
using pb::bench::median_ms;

#define PB_CUDNN_CHECK(expr)                                                                   \
  do {                                                                                         \
    const cudnnStatus_t pb_cudnn_status_ = (expr);                                             \
    if (pb_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                                            \
      throw std::runtime_error(std::string("cuDNN error ") +                                   \
                               cudnnGetErrorString(pb_cudnn_status_) +                         \
                               " in `" #expr "` at " __FILE__ ":" + std::to_string(__LINE__)); \
    }                                                                                          \
  } while (0)

constexpr int64_t kBatch = 64;

// Untyped device allocation (int32 labels, argmax, pointer and size arrays, workspaces).
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1)); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  ~DeviceBytes() { cudaFree(ptr_); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// Times `fn` per iteration with events (after two warm-up calls) and sets the bandwidth
// counters from the median iteration time. Returns the median in milliseconds.
template <typename Fn>
double time_and_report(benchmark::State& state, double bytes, Fn&& fn) {
  cudaStream_t stream = nullptr;
  for (int i = 0; i < 2; ++i) fn();
  PB_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  PB_CUDA_CHECK(cudaEventCreate(&start));
  PB_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (auto _ : state) {
    PB_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    PB_CUDA_CHECK(cudaEventRecord(stop, stream));
    PB_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PB_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
    times.push_back(ms);
  }
  PB_CUDA_CHECK(cudaEventDestroy(start));
  PB_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  const double median = times.empty() ? 0.0 : times[times.size() / 2];
  const double gbs = median > 0 ? bytes / (median * 1e-3) / 1e9 : 0.0;
  state.counters["GB/s"] = gbs;
  state.counters["frac_of_copy_bw"] = gbs / copy_bandwidth_gbs();
  state.counters["median_us"] = median * 1e3;
  return median;
}

#define PB_REQUIRE_DEVICE(state)               \
  do {                                         \
    if (!have_device()) {                      \
      (state).SkipWithError("no CUDA device"); \
      return;                                  \
    }                                          \
  } while (0)

// ---- batch norm ---------------------------------------------------------------------------------

constexpr int64_t kBnC = 256, kBnH = 56, kBnW = 56;

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t handle = [] {
    cudnnHandle_t h = nullptr;
    PB_CUDNN_CHECK(cudnnCreate(&h));
    PB_CUDNN_CHECK(cudnnSetStream(h, nullptr));
    return h;
  }();
  return handle;
}

// The tensors of one batch norm layer, filled with random data once per process (the library
// calls each benchmark function more than once; refilling 200 MB tensors on the host is slow).
struct BnBuffers {
  int64_t count = kBatch * kBnC * kBnH * kBnW;
  DeviceBuffer x{static_cast<size_t>(count)}, y{static_cast<size_t>(count)},
      dy{static_cast<size_t>(count)}, dx{static_cast<size_t>(count)};
  DeviceBuffer gamma{kBnC}, beta{kBnC}, rm{kBnC}, rv{kBnC}, dgamma{kBnC}, dbeta{kBnC};
  DeviceBuffer mean{static_cast<size_t>(kBatch * kBnC)}, invstd{static_cast<size_t>(kBatch * kBnC)};
  BnBuffers() {
    fill_uniform(x, 1, -1.0f, 3.0f);
    fill_uniform(dy, 2);
    fill_uniform(gamma, 3, 0.5f, 1.5f);
    fill_uniform(beta, 4);
    fill_uniform(rm, 5);
    fill_uniform(rv, 6, 0.5f, 2.0f);
  }
};

BnBuffers& bn_buffers() {
  static BnBuffers buffers;
  return buffers;
}

// cuDNN's spatial batch norm on the same tensor: median ms of the forward (train) or backward,
// measured once per process.
double cudnn_bn_ms(bool backward) {
  static std::map<bool, double> cache;
  const auto it = cache.find(backward);
  if (it != cache.end()) return it->second;
  BnBuffers& b = bn_buffers();
  cudnnTensorDescriptor_t x_desc, bn_desc;
  PB_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc));
  PB_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bn_desc));
  PB_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, kBatch,
                                            kBnC, kBnH, kBnW));
  PB_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(bn_desc, x_desc, CUDNN_BATCHNORM_SPATIAL));
  const float one = 1.0f, zero = 0.0f;
  const double eps = 1e-5;
  auto forward = [&] {
    PB_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc, b.x.get(), x_desc, b.y.get(),
        bn_desc, b.gamma.get(), b.beta.get(), 0.1, b.rm.get(), b.rv.get(), eps, b.mean.get(),
        b.invstd.get()));
  };
  auto backward_fn = [&] {
    PB_CUDNN_CHECK(cudnnBatchNormalizationBackward(
        cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, x_desc, b.x.get(),
        x_desc, b.dy.get(), x_desc, b.dx.get(), bn_desc, b.gamma.get(), b.dgamma.get(),
        b.dbeta.get(), eps, b.mean.get(), b.invstd.get()));
  };
  forward();  // saved statistics for the backward
  const double ms = backward ? median_ms(nullptr, backward_fn) : median_ms(nullptr, forward);
  PB_CUDNN_CHECK(cudnnDestroyTensorDescriptor(x_desc));
  PB_CUDNN_CHECK(cudnnDestroyTensorDescriptor(bn_desc));
  cache[backward] = ms;
  return ms;
}

// Forward: reads x, writes y (+ per-channel statistics, negligible): 2 * count floats.
void BM_BatchNormForwardTrain(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const int64_t V = state.range(0);
  const bool relu = state.range(1) != 0;
  const double cudnn_ms = relu ? 0.0 : cudnn_bn_ms(false);
  BnBuffers& b = bn_buffers();
  const pb::kernels::BatchNormShape s{kBatch, kBnC, kBnH * kBnW, V};
  auto* fwd = relu ? pb::kernels::batchnorm_relu_forward_train_cuda
                   : pb::kernels::batchnorm_forward_train_cuda;
  const double ms = time_and_report(state, 2.0 * 4.0 * b.count, [&] {
    fwd(nullptr, s, b.x.get(), b.gamma.get(), b.beta.get(), 1e-5f, 0.1f, b.y.get(), b.mean.get(),
        b.invstd.get(), b.rm.get(), b.rv.get());
  });
  if (!relu && ms > 0) state.counters["ratio_vs_cudnn"] = cudnn_ms / ms;
}

// Backward: reads x, dy, writes dx (+ per-channel terms): 3 * count floats.
void BM_BatchNormBackwardTrain(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const int64_t V = state.range(0);
  const double cudnn_ms = cudnn_bn_ms(true);
  BnBuffers& b = bn_buffers();
  const pb::kernels::BatchNormShape s{kBatch, kBnC, kBnH * kBnW, V};
  pb::kernels::batchnorm_forward_train_cuda(nullptr, s, b.x.get(), b.gamma.get(), b.beta.get(),
                                            1e-5f, 0.1f, b.y.get(), b.mean.get(), b.invstd.get(),
                                            nullptr, nullptr);
  const double ms = time_and_report(state, 3.0 * 4.0 * b.count, [&] {
    pb::kernels::batchnorm_backward_train_cuda(nullptr, s, b.x.get(), b.dy.get(), b.gamma.get(),
                                               b.mean.get(), b.invstd.get(), b.dx.get(),
                                               b.dgamma.get(), b.dbeta.get());
  });
  if (ms > 0) state.counters["ratio_vs_cudnn"] = cudnn_ms / ms;
}

BENCHMARK(BM_BatchNormForwardTrain)
    ->ArgNames({"V", "relu"})
    ->Args({kBatch, 0})
    ->Args({32, 0})
    ->Args({kBatch, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormBackwardTrain)
    ->ArgName("V")
    ->Arg(kBatch)
    ->Arg(32)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- elementwise --------------------------------------------------------------------------------

constexpr int64_t kElems = kBatch * 256 * 56 * 56;

enum class Ew { kRelu, kAdd, kAddRelu, kAddReluBackward, kScale };

// relu, scale: 1 read + 1 write; add, add_relu, add_relu_backward: 2 reads + 1 write.
void BM_Elementwise(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const Ew op = static_cast<Ew>(state.range(0));
  static DeviceBuffer a(kElems), b(kElems), y(kElems);
  static const bool filled = [] {
    fill_uniform(a, 7);
    fill_uniform(b, 8);
    return true;
  }();
  static_cast<void>(filled);
  const bool binary = op != Ew::kRelu && op != Ew::kScale;
  time_and_report(state, (binary ? 3.0 : 2.0) * 4.0 * kElems, [&] {
    switch (op) {
      case Ew::kRelu:
        pb::kernels::relu_forward_cuda(nullptr, kElems, a.get(), y.get());
        break;
      case Ew::kAdd:
        pb::kernels::add_cuda(nullptr, kElems, a.get(), b.get(), y.get());
        break;
      case Ew::kAddRelu:
        pb::kernels::add_relu_cuda(nullptr, kElems, a.get(), b.get(), y.get());
        break;
      case Ew::kAddReluBackward:
        pb::kernels::add_relu_backward_cuda(nullptr, kElems, a.get(), b.get(), y.get());
        break;
      case Ew::kScale:
        pb::kernels::scale_cuda(nullptr, kElems, 0.5f, a.get(), y.get());
        break;
    }
  });
  state.SetLabel(op == Ew::kRelu              ? "relu"
                 : op == Ew::kAdd             ? "add"
                 : op == Ew::kAddRelu         ? "add_relu"
                 : op == Ew::kAddReluBackward ? "add_relu_backward"
                                              : "scale");
}
BENCHMARK(BM_Elementwise)
    ->ArgName("op")
    ->DenseRange(0, 4)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- pooling ------------------------------------------------------------------------------------

const pb::kernels::Pool2dShape kPool{kBatch, 64, 112, 112, 3, 3, 2, 2, 1, 1};

// max fwd: x read, y + argmax written; max bwd: dy + argmax read, dx written.
void BM_MaxPool(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const bool backward = state.range(0) != 0;
  const int64_t nx = kPool.N * kPool.C * kPool.H * kPool.W;
  const int64_t ny = kPool.N * kPool.C * kPool.P() * kPool.Q();
  DeviceBuffer x(nx), y(ny), dy(ny), dx(nx);
  DeviceBytes argmax(ny * sizeof(int32_t));
  fill_uniform(x, 9);
  fill_uniform(dy, 10);
  pb::kernels::max_pool2d_forward_cuda(nullptr, kPool, x.get(), y.get(), argmax.as<int32_t>());
  time_and_report(state, 4.0 * (nx + 2.0 * ny), [&] {
    if (backward) {
      pb::kernels::max_pool2d_backward_cuda(nullptr, kPool, dy.get(), argmax.as<int32_t>(),
                                            dx.get());
    } else {
      pb::kernels::max_pool2d_forward_cuda(nullptr, kPool, x.get(), y.get(), argmax.as<int32_t>());
    }
  });
}
BENCHMARK(BM_MaxPool)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// avg fwd: x read, y written; bwd: dy read, dx written.
void BM_AvgPool(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const bool backward = state.range(0) != 0;
  const int64_t nx = kPool.N * kPool.C * kPool.H * kPool.W;
  const int64_t ny = kPool.N * kPool.C * kPool.P() * kPool.Q();
  DeviceBuffer x(nx), y(ny), dy(ny), dx(nx);
  fill_uniform(x, 11);
  fill_uniform(dy, 12);
  time_and_report(state, 4.0 * (nx + ny), [&] {
    if (backward) {
      pb::kernels::avg_pool2d_backward_cuda(nullptr, kPool, dy.get(), dx.get());
    } else {
      pb::kernels::avg_pool2d_forward_cuda(nullptr, kPool, x.get(), y.get());
    }
  });
}
BENCHMARK(BM_AvgPool)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Global average (64,2048,7,7): fwd reads x, writes y; bwd reads dy, writes dx.
void BM_GlobalAvgPool(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const bool backward = state.range(0) != 0;
  const int64_t C = 2048, L = 49, nx = kBatch * C * L, ny = kBatch * C;
  DeviceBuffer x(nx), y(ny), dy(ny), dx(nx);
  fill_uniform(x, 13);
  fill_uniform(dy, 14);
  time_and_report(state, 4.0 * (nx + ny), [&] {
    if (backward) {
      pb::kernels::global_avg_pool_backward_cuda(nullptr, kBatch, C, L, dy.get(), dx.get());
    } else {
      pb::kernels::global_avg_pool_forward_cuda(nullptr, kBatch, C, L, x.get(), y.get());
    }
  });
}
BENCHMARK(BM_GlobalAvgPool)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- softmax cross-entropy ----------------------------------------------------------------------

// fwd: logits, labels, weights read, probs written; bwd: probs, labels, weights read, dlogits
// written.
void BM_SoftmaxCrossEntropy(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const bool backward = state.range(0) != 0;
  const int64_t N = 65536, K = 1000;
  DeviceBuffer logits(N * K), probs(N * K), dlogits(N * K), weights(N), loss(1), dloss(1);
  DeviceBytes labels(N * sizeof(int32_t)), ws(pb::kernels::reduce_cuda_workspace_bytes());
  fill_uniform(logits, 15, -5.0f, 5.0f);
  fill_uniform(weights, 16, 0.5f, 1.5f);
  fill_uniform(dloss, 17, 1.0f, 1.0001f);
  {
    std::mt19937 rng(18);
    std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(K - 1));
    std::vector<int32_t> host(N);
    for (int32_t& l : host) l = dist(rng);
    PB_CUDA_CHECK(
        cudaMemcpy(labels.as<int32_t>(), host.data(), N * sizeof(int32_t), cudaMemcpyHostToDevice));
  }
  pb::kernels::softmax_cross_entropy_forward_cuda(nullptr, N, K, logits.get(), labels.as<int32_t>(),
                                                  weights.get(), 0.1f, loss.get(), probs.get(),
                                                  ws.as<void>());
  time_and_report(state, 4.0 * (2.0 * N * K + 2.0 * N), [&] {
    if (backward) {
      pb::kernels::softmax_cross_entropy_backward_cuda(nullptr, N, K, probs.get(),
                                                       labels.as<int32_t>(), weights.get(), 0.1f,
                                                       dloss.get(), dlogits.get(), ws.as<void>());
    } else {
      pb::kernels::softmax_cross_entropy_forward_cuda(nullptr, N, K, logits.get(),
                                                      labels.as<int32_t>(), weights.get(), 0.1f,
                                                      loss.get(), probs.get(), ws.as<void>());
    }
  });
}
BENCHMARK(BM_SoftmaxCrossEntropy)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- reductions ---------------------------------------------------------------------------------

// ResNet-50's 161 parameter tensor sizes (25.6M floats): stem, 16 bottlenecks (+4
// projections), fc.
std::vector<int64_t> resnet50_param_sizes() {
  std::vector<int64_t> sizes = {64 * 3 * 7 * 7, 64, 64};
  int64_t in = 64;
  const int64_t widths[] = {64, 128, 256, 512}, blocks[] = {3, 4, 6, 3};
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t w = widths[stage], out = 4 * w;
    for (int b = 0; b < blocks[stage]; ++b) {
      sizes.insert(sizes.end(), {w * in, w, w, w * w * 9, w, w, out * w, out, out});
      if (b == 0) sizes.insert(sizes.end(), {out * in, out, out});
      in = out;
    }
  }
  sizes.insert(sizes.end(), {1000 * 2048, 1000});
  return sizes;
}

// Reads every parameter once (the pointer/size arrays are negligible).
void BM_GlobalL2Norm(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  const std::vector<int64_t> sizes = resnet50_param_sizes();
  // Separate allocations, as a model's parameters would be.
  std::vector<DeviceBuffer> params;
  std::vector<const float*> ptrs;
  int64_t total = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    params.emplace_back(static_cast<size_t>(sizes[t]));
    fill_uniform(params.back(), 100 + t, -0.05f, 0.05f);
    ptrs.push_back(params.back().get());
    total += sizes[t];
  }
  DeviceBytes d_ptrs(ptrs.size() * sizeof(float*)), d_sizes(sizes.size() * sizeof(int64_t)),
      ws(pb::kernels::reduce_cuda_workspace_bytes());
  DeviceBuffer out(1);
  PB_CUDA_CHECK(cudaMemcpy(d_ptrs.as<void>(), ptrs.data(), ptrs.size() * sizeof(float*),
                           cudaMemcpyHostToDevice));
  PB_CUDA_CHECK(cudaMemcpy(d_sizes.as<void>(), sizes.data(), sizes.size() * sizeof(int64_t),
                           cudaMemcpyHostToDevice));
  time_and_report(state, 4.0 * total, [&] {
    pb::kernels::global_l2_norm_cuda(nullptr, static_cast<int>(sizes.size()),
                                     d_ptrs.as<const float* const>(), d_sizes.as<int64_t>(),
                                     out.get(), ws.as<void>());
  });
  state.counters["tensors"] = static_cast<double>(sizes.size());
}
BENCHMARK(BM_GlobalL2Norm)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads n floats once.
void BM_Sum(benchmark::State& state) {
  PB_REQUIRE_DEVICE(state);
  static DeviceBuffer x(kElems);
  static const bool filled = (fill_uniform(x, 19), true);
  static_cast<void>(filled);
  DeviceBuffer out(1);
  DeviceBytes ws(pb::kernels::reduce_cuda_workspace_bytes());
  time_and_report(state, 4.0 * kElems, [&] {
    pb::kernels::sum_cuda(nullptr, kElems, x.get(), out.get(), ws.as<void>());
  });
}
BENCHMARK(BM_Sum)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
