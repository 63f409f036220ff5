// conv2d_*_cuda (implicit GEMM, FP32 FFMA) against cuDNN, forward / backward-data /
// backward-weight, on ResNet-50 layer shapes (batch 32, ImageNet sizes) and ResNet-20 shapes
// (batch 128, CIFAR sizes).
//
// Baseline settings: CUDNN_DATA_FLOAT tensors and convolution, math type CUDNN_FMA_MATH (FP32
// FFMA kernels only: CUDNN_DEFAULT_MATH would let cuDNN use TF32 tensor cores for FP32 on this
// hardware), and NVIDIA_TF32_OVERRIDE=0 set before any library starts (no TF32 process-wide).
// cuDNN's algorithm is chosen once per shape and pass with cudnnFind*AlgorithmEx (it times every
// algorithm, FFT and Winograd included), taking the fastest result with status SUCCESS and an FMA
// or default math type, and it gets the workspace that algorithm asks for. Neither side adds a
// bias: forward is the convolution alone and backward-weight computes dw only, as cuDNN does.
//
// Per shape and pass (once): random inputs (never zeros), one run of each, relative difference
// checked against cuDNN (<= 5e-4: cuDNN's FFT and Winograd algorithms round differently from a
// direct FP32 sum, a real indexing error is O(1)), then the median of 20 event-timed runs of each
// after warm-up. The benchmark's own time is ours (manual time, events). Counters: TFLOP/s (ours,
// 2*N*K*P*Q*C*R*S / median), cudnn_TFLOP/s, ratio_vs_cudnn = cuDNN time / our time. Geometric
// means of the ratio per pass and network are printed at the end.
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/conv2d.h"

#define CUDNN_CHECK(expr)                                                                      \
  do {                                                                                         \
    const cudnnStatus_t pb_cudnn_status_ = (expr);                                             \
    if (pb_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                                            \
      throw std::runtime_error(std::string("cuDNN error ") +                                   \
                               cudnnGetErrorString(pb_cudnn_status_) +                         \
                               " in `" #expr "` at " __FILE__ ":" + std::to_string(__LINE__)); \
    }                                                                                          \
  } while (0)

namespace pb::bench {
namespace {

using kernels::Conv2dShape;

enum class Pass { Forward, BackwardData, BackwardWeight };
const char* pass_name(Pass p) {
  return p == Pass::Forward ? "fprop" : p == Pass::BackwardData ? "dgrad" : "wgrad";
}

cudnnHandle_t cudnn() {
  static cudnnHandle_t handle = [] {
    cudnnHandle_t h;
    CUDNN_CHECK(cudnnCreate(&h));
    CUDNN_CHECK(cudnnSetStream(h, nullptr));
    return h;
  }();
  return handle;
}

struct ConvBench {
  const char* net;  // "resnet50" or "resnet20"
  const char* name;
  Conv2dShape s;
};

Conv2dShape conv(int64_t N, int64_t C, int64_t HW, int64_t K, int64_t RS, int64_t stride,
                 int64_t pad) {
  Conv2dShape s{N, C, HW, HW, K, RS, RS};
  s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad;
  return s;
}

// cuDNN descriptors of one shape.
struct CudnnDescs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  explicit CudnnDescs(const Conv2dShape& s) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    const auto i = [](int64_t v) { return static_cast<int>(v); };
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(s.N), i(s.C),
                                           i(s.H), i(s.W)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(s.N), i(s.K),
                                           i(s.P()), i(s.Q())));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, i(s.K), i(s.C),
                                           i(s.R), i(s.S)));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, i(s.pad_h), i(s.pad_w), i(s.stride_h),
                                                i(s.stride_w), 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, CUDNN_FMA_MATH));  // FP32 FFMA only
  }
  ~CudnnDescs() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
  CudnnDescs(const CudnnDescs&) = delete;
  CudnnDescs& operator=(const CudnnDescs&) = delete;
};

size_t count(int64_t a, int64_t b, int64_t c, int64_t d) {
  return static_cast<size_t>(a * b * c * d);
}

// One shape's tensors (shared by its three passes) and cuDNN state.
struct ShapeSetup {
  explicit ShapeSetup(const Conv2dShape& s_)
      : s(s_),
        descs(s_),
        x(count(s_.N, s_.C, s_.H, s_.W)),
        w(count(s_.K, s_.C, s_.R, s_.S)),
        dy(count(s_.N, s_.K, s_.P(), s_.Q())),
        out(std::max({x.count(), w.count(), dy.count()})),
        ref(out.count()),
        ours_ws(static_cast<size_t>((kernels::conv2d_backward_weight_cuda_workspace_bytes(s_) + 3) /
                                    4)) {
    fill_uniform(x, 21);
    fill_uniform(w, 22);
    fill_uniform(dy, 23);
  }
  Conv2dShape s;
  CudnnDescs descs;
  DeviceBuffer x, w, dy;
  DeviceBuffer out, ref;  // our result and cuDNN's, for any pass
  DeviceBuffer ours_ws;   // backward-weight split-K workspace
  std::unique_ptr<DeviceBuffer> cudnn_ws;
  size_t cudnn_ws_bytes = 0;
};

// A cuDNN algorithm choice for one pass: the algorithm id (one of the three enums), its math
// type and workspace.
struct CudnnChoice {
  int algo = -1;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
};

bool acceptable(cudnnStatus_t status, cudnnMathType_t math) {
  return status == CUDNN_STATUS_SUCCESS &&
         (math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH);  // never tensor-op (TF32) math
}

constexpr size_t kFindWorkspaceCap = size_t{1} << 30;  // 1 GiB for cudnnFind*Ex to try algorithms

template <typename Perf>
CudnnChoice pick(const Perf* perf, int returned, const char* what) {
  for (int i = 0; i < returned; ++i) {  // sorted fastest first
    if (acceptable(perf[i].status, perf[i].mathType)) {
      return {static_cast<int>(perf[i].algo), perf[i].mathType, perf[i].memory};
    }
  }
  throw std::runtime_error(std::string("cuDNN found no FP32 (FMA) algorithm for ") + what);
}

CudnnChoice find_algorithm(ShapeSetup& g, Pass pass) {
  cudnnHandle_t h = cudnn();
  const CudnnDescs& d = g.descs;
  CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, CUDNN_FMA_MATH));  // a previous pass may differ
  // Workspace for the search: the largest any algorithm asks for, capped.
  size_t need = 0;
  for (int a = 0; a < 8; ++a) {
    size_t bytes = 0;
    cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
    if (pass == Pass::Forward && a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT) {
      st = cudnnGetConvolutionForwardWorkspaceSize(
          h, d.x, d.w, d.conv, d.y, static_cast<cudnnConvolutionFwdAlgo_t>(a), &bytes);
    } else if (pass == Pass::BackwardData && a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT) {
      st = cudnnGetConvolutionBackwardDataWorkspaceSize(
          h, d.w, d.y, d.conv, d.x, static_cast<cudnnConvolutionBwdDataAlgo_t>(a), &bytes);
    } else if (pass == Pass::BackwardWeight && a < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT) {
      st = cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, d.x, d.y, d.conv, d.w, static_cast<cudnnConvolutionBwdFilterAlgo_t>(a), &bytes);
    }
    if (st == CUDNN_STATUS_SUCCESS && bytes <= kFindWorkspaceCap) need = std::max(need, bytes);
  }
  DeviceBuffer search_ws((need + 3) / 4);
  constexpr int kMaxAlgos = 16;
  int returned = 0;
  CudnnChoice choice;
  if (pass == Pass::Forward) {
    cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x, g.x.get(), d.w, g.w.get(), d.conv,
                                                       d.y, g.ref.get(), kMaxAlgos, &returned, perf,
                                                       search_ws.get(), need));
    choice = pick(perf, returned, "forward");
  } else if (pass == Pass::BackwardData) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[kMaxAlgos];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        h, d.w, g.w.get(), d.y, g.dy.get(), d.conv, d.x, g.ref.get(), kMaxAlgos, &returned, perf,
        search_ws.get(), need));
    choice = pick(perf, returned, "backward-data");
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[kMaxAlgos];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        h, d.x, g.x.get(), d.y, g.dy.get(), d.conv, d.w, g.ref.get(), kMaxAlgos, &returned, perf,
        search_ws.get(), need));
    choice = pick(perf, returned, "backward-weight");
  }
  return choice;
}

void run_cudnn(ShapeSetup& g, Pass pass, const CudnnChoice& c) {
  const float one = 1.0f, zero = 0.0f;
  const CudnnDescs& d = g.descs;
  void* ws = g.cudnn_ws ? g.cudnn_ws->get() : nullptr;
  if (pass == Pass::Forward) {
    CUDNN_CHECK(cudnnConvolutionForward(cudnn(), &one, d.x, g.x.get(), d.w, g.w.get(), d.conv,
                                        static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws,
                                        c.workspace, &zero, d.y, g.ref.get()));
  } else if (pass == Pass::BackwardData) {
    CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn(), &one, d.w, g.w.get(), d.y, g.dy.get(), d.conv,
                                             static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws,
                                             c.workspace, &zero, d.x, g.ref.get()));
  } else {
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn(), &one, d.x, g.x.get(), d.y, g.dy.get(),
                                               d.conv,
                                               static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
                                               ws, c.workspace, &zero, d.w, g.ref.get()));
  }
}

void run_ours(ShapeSetup& g, Pass pass) {
  if (pass == Pass::Forward) {
    kernels::conv2d_forward_cuda(nullptr, g.s, g.x.get(), g.w.get(), nullptr, g.out.get());
  } else if (pass == Pass::BackwardData) {
    kernels::conv2d_backward_data_cuda(nullptr, g.s, g.dy.get(), g.w.get(), g.out.get());
  } else {
    kernels::conv2d_backward_weight_cuda(nullptr, g.s, g.x.get(), g.dy.get(), g.out.get(), nullptr,
                                         g.ours_ws.count() > 0 ? g.ours_ws.get() : nullptr);
  }
}

double rel_diff(const DeviceBuffer& out, const DeviceBuffer& ref, size_t n) {
  std::vector<float> a(n), b(n);
  PB_CUDA_CHECK(cudaMemcpy(a.data(), out.get(), n * sizeof(float), cudaMemcpyDeviceToHost));
  PB_CUDA_CHECK(cudaMemcpy(b.data(), ref.get(), n * sizeof(float), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = static_cast<double>(a[i]) - b[i];
    num += e * e;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);  // NaN when ours left NaN behind
}

struct PassResult {
  double ours_ms = 0, cudnn_ms = 0;
  int cudnn_algo = -1;
  std::string error;
};

// ratio per (net, pass, shape), for the geometric means printed at the end
std::map<std::string, std::map<std::string, double>>& ratios() {
  static std::map<std::string, std::map<std::string, double>> r;
  return r;
}

PassResult measure(ShapeSetup& g, Pass pass) {
  PassResult r;
  const CudnnChoice c = find_algorithm(g, pass);
  if (c.workspace > 0 && (!g.cudnn_ws || g.cudnn_ws_bytes < c.workspace)) {
    g.cudnn_ws = std::make_unique<DeviceBuffer>((c.workspace + 3) / 4);
    g.cudnn_ws_bytes = c.workspace;
  }
  const CudnnDescs& d = g.descs;
  CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, c.math));
  const size_t n = pass == Pass::Forward        ? g.dy.count()
                   : pass == Pass::BackwardData ? g.x.count()
                                                : g.w.count();
  PB_CUDA_CHECK(cudaMemset(g.out.get(), 0xFF, g.out.bytes()));  // NaN: unwritten shows
  run_ours(g, pass);
  run_cudnn(g, pass, c);
  PB_CUDA_CHECK(cudaDeviceSynchronize());
  const double diff = rel_diff(g.out, g.ref, n);
  if (!(diff <= 5e-4)) {
    r.error = std::string(pass_name(pass)) + ": ours and cuDNN disagree, relative difference " +
              std::to_string(diff);
    return r;
  }
  r.cudnn_algo = c.algo;
  r.ours_ms = median_ms(nullptr, [&] { run_ours(g, pass); });
  r.cudnn_ms = median_ms(nullptr, [&] { run_cudnn(g, pass, c); });
  return r;
}

void BM_Conv(benchmark::State& state, ConvBench b, Pass pass) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  try {
    // One shape's tensors at a time (benchmarks run shape by shape); one measurement per pass.
    static std::string current;
    static std::unique_ptr<ShapeSetup> setup;
    static std::map<std::string, PassResult> results;
    const std::string key = std::string(b.net) + "/" + b.name;
    if (current != key) {
      setup.reset();
      setup = std::make_unique<ShapeSetup>(b.s);
      current = key;
    }
    const std::string pass_key = key + "/" + pass_name(pass);
    auto it = results.find(pass_key);
    if (it == results.end()) {
      it = results.emplace(pass_key, measure(*setup, pass)).first;
      if (it->second.error.empty()) {
        ratios()[std::string(b.net) + " " + pass_name(pass)][b.name] =
            it->second.cudnn_ms / it->second.ours_ms;
      }
    }
    const PassResult& r = it->second;
    if (!r.error.empty()) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    run_timed(state, nullptr, [&] { run_ours(*setup, pass); });
    const double flops = b.s.flops();
    state.counters["TFLOP/s"] = flops / (r.ours_ms * 1e-3) / 1e12;
    state.counters["cudnn_TFLOP/s"] = flops / (r.cudnn_ms * 1e-3) / 1e12;
    state.counters["ratio_vs_cudnn"] = r.cudnn_ms / r.ours_ms;
    state.counters["cudnn_algo"] = r.cudnn_algo;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ResNet-50 v1.5 (stride on the 3x3 of the first bottleneck of a stage), batch 32, 224x224.
// ResNet-20 for CIFAR-10, batch 128, 32x32.
const std::vector<ConvBench> kShapes = {
    {"resnet50", "stem_3-64_7x7s2_224", conv(32, 3, 224, 64, 7, 2, 3)},
    {"resnet50", "64-64_3x3_56", conv(32, 64, 56, 64, 3, 1, 1)},
    {"resnet50", "64-256_1x1_56", conv(32, 64, 56, 256, 1, 1, 0)},
    {"resnet50", "256-64_1x1_56", conv(32, 256, 56, 64, 1, 1, 0)},
    {"resnet50", "128-128_3x3s2_56", conv(32, 128, 56, 128, 3, 2, 1)},
    {"resnet50", "256-512_1x1s2_56", conv(32, 256, 56, 512, 1, 2, 0)},
    {"resnet50", "128-128_3x3_28", conv(32, 128, 28, 128, 3, 1, 1)},
    {"resnet50", "128-512_1x1_28", conv(32, 128, 28, 512, 1, 1, 0)},
    {"resnet50", "512-128_1x1_28", conv(32, 512, 28, 128, 1, 1, 0)},
    {"resnet50", "256-256_3x3s2_28", conv(32, 256, 28, 256, 3, 2, 1)},
    {"resnet50", "512-1024_1x1s2_28", conv(32, 512, 28, 1024, 1, 2, 0)},
    {"resnet50", "256-256_3x3_14", conv(32, 256, 14, 256, 3, 1, 1)},
    {"resnet50", "256-1024_1x1_14", conv(32, 256, 14, 1024, 1, 1, 0)},
    {"resnet50", "1024-256_1x1_14", conv(32, 1024, 14, 256, 1, 1, 0)},
    {"resnet50", "512-512_3x3s2_14", conv(32, 512, 14, 512, 3, 2, 1)},
    {"resnet50", "1024-2048_1x1s2_14", conv(32, 1024, 14, 2048, 1, 2, 0)},
    {"resnet50", "512-512_3x3_7", conv(32, 512, 7, 512, 3, 1, 1)},
    {"resnet50", "512-2048_1x1_7", conv(32, 512, 7, 2048, 1, 1, 0)},
    {"resnet50", "2048-512_1x1_7", conv(32, 2048, 7, 512, 1, 1, 0)},
    {"resnet20", "3-16_3x3_32", conv(128, 3, 32, 16, 3, 1, 1)},
    {"resnet20", "16-16_3x3_32", conv(128, 16, 32, 16, 3, 1, 1)},
    {"resnet20", "16-32_3x3s2_32", conv(128, 16, 32, 32, 3, 2, 1)},
    {"resnet20", "32-32_3x3_16", conv(128, 32, 16, 32, 3, 1, 1)},
    {"resnet20", "32-64_3x3s2_16", conv(128, 32, 16, 64, 3, 2, 1)},
    {"resnet20", "64-64_3x3_8", conv(128, 64, 8, 64, 3, 1, 1)},
};

const bool registered = [] {
  for (const ConvBench& b : kShapes) {
    for (const Pass p : {Pass::Forward, Pass::BackwardData, Pass::BackwardWeight}) {
      const std::string name = std::string("conv2d_") + pass_name(p) + "/" + b.net + "/" + b.name;
      benchmark::RegisterBenchmark(name.c_str(), BM_Conv, b, p)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace pb::bench

int main(int argc, char** argv) {
  setenv("NVIDIA_TF32_OVERRIDE", "0", 1);  // no TF32 anywhere in this process (see the top)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const auto& [group, by_shape] : pb::bench::ratios()) {
    double log_sum = 0;
    for (const auto& [name, ratio] : by_shape) log_sum += std::log(ratio);
    std::printf(
        "conv2d %s vs cuDNN (FP32): geometric-mean time ratio (cuDNN / ours) %.3f over %zu "
        "shapes\n",
        group.c_str(), std::exp(log_sum / static_cast<double>(by_shape.size())), by_shape.size());
  }
  return 0;
}
