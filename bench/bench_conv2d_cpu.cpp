// CPU conv2d (float) on the ResNet-20 / CIFAR-10 layer shapes, each pass next to the OpenBLAS
// sgemm it reduces to (the vendor baseline, measured in the same run).
//
// Design
//   Two benchmarks per (pass, layer): conv2d_{fwd,bwd_data,bwd_weight}/<layer>/N:<batch>/
//   portable:{0,1}. portable:0 is what conv2d_*_cpu runs on this machine: the direct AVX2 path for
//   stride-1 "same" convolutions, im2col + GEMM otherwise; portable:1 switches the AVX2 kernels off
//   (kernels/cpu/isa.h), so the same shapes run im2col + GEMM. The label says which ran ("direct"
//   or "im2col"). N defaults to 32.
//   The timed loop runs the conv kernel alone on preallocated random tensors (no bias: ResNet convs
//   feed batch norm). Wall-clock time (UseRealTime), because the work runs on several threads,
//   which the default per-thread CPU timer would not see.
//   Each benchmark also times, with std::chrono outside the timed loop, the single batched sgemm
//   its pass is equivalent to: the same 2*N*K*P*Q*C*R*S FLOPs with the im2col of the whole batch
//   taken as free, run by OpenBLAS on its own threads (as many as the kernel pool has):
//     fwd         (K, N*P*Q)   = (K, CRS) * (CRS, N*P*Q)              sgemm NN
//     bwd_data    (CRS, N*P*Q) = (K, CRS)^T * (K, N*P*Q)              sgemm TN
//     bwd_weight  (K, CRS)     = (K, N*P*Q) * (CRS, N*P*Q)^T          sgemm NT
//   (one warm-up call, then the mean of at least 3 calls and at least 20 ms; measured once per
//   pass, layer and N, and cached, since the library calls each benchmark function several times).
//   For im2col this is the best the design could reach; the direct path does no lowering and can
//   beat it (these GEMMs are skinny: K = 16..64 rows).
//   Counters:
//     gflops          conv GFLOP/s (the library's rate over the timed loop)
//     sgemm_gflops    GFLOP/s of the equivalent batched sgemm
//     ratio_vs_sgemm  conv GFLOP/s / sgemm GFLOP/s, both from std::chrono wall time (above 1: the
//                     conv is faster than the one GEMM its FLOPs amount to)
//   The FLOP limit of the machine is cores x clock x 32 (two 8-wide FMA pipes per core): 157
//   GFLOP/s for the 2 cores at 2.45 GHz this was written on.
//   Runs default to --benchmark_min_time=0.1 so the whole suite takes seconds; pass the flag to
//   override. The OpenBLAS build and the thread count are printed in the run's context.
//
// Usage: pb_bench_conv2d_cpu [--benchmark_filter=fwd] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cpu/conv2d_algos.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace {

using pb::kernels::Conv2dShape;
using Clock = std::chrono::steady_clock;

enum class Pass { kForward, kBackwardData, kBackwardWeight };

const char* pass_name(Pass pass) {
  switch (pass) {
    case Pass::kForward:
      return "fwd";
    case Pass::kBackwardData:
      return "bwd_data";
    case Pass::kBackwardWeight:
      return "bwd_weight";
  }
  return "?";
}

// A conv layer of ResNet-20 for CIFAR-10 (3x3 convs pad 1; 1x1 projections pad 0), batch left 0.
struct Layer {
  const char* name;
  int64_t C, H, W, K, R, S, stride, pad;
  Conv2dShape shape(int64_t batch) const {
    return Conv2dShape{.N = batch,
                       .C = C,
                       .H = H,
                       .W = W,
                       .K = K,
                       .R = R,
                       .S = S,
                       .stride_h = stride,
                       .stride_w = stride,
                       .pad_h = pad,
                       .pad_w = pad};
  }
};

const Layer kLayers[] = {
    {"stem_3to16_32x32", 3, 32, 32, 16, 3, 3, 1, 1},
    {"stage1_16to16_32x32", 16, 32, 32, 16, 3, 3, 1, 1},
    {"stage2_down_16to32_32x32_s2", 16, 32, 32, 32, 3, 3, 2, 1},
    {"stage2_32to32_16x16", 32, 16, 16, 32, 3, 3, 1, 1},
    {"stage3_down_32to64_16x16_s2", 32, 16, 16, 64, 3, 3, 2, 1},
    {"stage3_64to64_8x8", 64, 8, 8, 64, 3, 3, 1, 1},
    {"proj1x1_16to32_32x32_s2", 16, 32, 32, 32, 1, 1, 2, 0},
    {"proj1x1_32to64_16x16_s2", 32, 16, 16, 64, 1, 1, 2, 0},
};

std::vector<float> random_floats(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

blasint blas(int64_t v) {
  return static_cast<blasint>(v);
}

// Seconds per call of the batched OpenBLAS sgemm equivalent to `pass` on shape s (see the header
// comment).
double time_equivalent_sgemm(Pass pass, const Conv2dShape& s) {
  const int64_t CRS = s.C * s.R * s.S, NPQ = s.N * s.P() * s.Q();
  const std::vector<float> w = random_floats(s.K * CRS, 1);    // (K,CRS)
  const std::vector<float> col = random_floats(CRS * NPQ, 2);  // (CRS,NPQ)
  const std::vector<float> dy = random_floats(s.K * NPQ, 3);   // (K,NPQ)
  std::vector<float> out(static_cast<size_t>(std::max(s.K * NPQ, CRS * NPQ)));
  const auto run = [&] {
    switch (pass) {
      case Pass::kForward:  // (K,NPQ) = (K,CRS) * (CRS,NPQ)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas(s.K), blas(NPQ), blas(CRS),
                    1.0f, w.data(), blas(CRS), col.data(), blas(NPQ), 0.0f, out.data(), blas(NPQ));
        break;
      case Pass::kBackwardData:  // (CRS,NPQ) = (K,CRS)^T * (K,NPQ)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas(CRS), blas(NPQ), blas(s.K), 1.0f,
                    w.data(), blas(CRS), dy.data(), blas(NPQ), 0.0f, out.data(), blas(NPQ));
        break;
      case Pass::kBackwardWeight:  // (K,CRS) = (K,NPQ) * (CRS,NPQ)^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas(s.K), blas(CRS), blas(NPQ), 1.0f,
                    dy.data(), blas(NPQ), col.data(), blas(NPQ), 0.0f, out.data(), blas(CRS));
        break;
    }
    benchmark::ClobberMemory();
  };
  // The baseline is OpenBLAS as a user would call it, on its own threads, as many as the kernel
  // pool has; playbook itself calls it single-threaded (kernels/cpu/gemm.cpp), so restore that.
  openblas_set_num_threads(pb::kernels::cpu::cpu_kernel_threads());
  run();  // warm-up: page faults, OpenBLAS thread start-up
  int reps = 0;
  const Clock::time_point start = Clock::now();
  double elapsed = 0.0;
  while (reps < 3 || elapsed < 0.02) {
    run();
    ++reps;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  benchmark::DoNotOptimize(out.data());
  openblas_set_num_threads(1);
  return elapsed / reps;
}

// Cached per (pass, layer, batch): the library calls a benchmark function several times.
double equivalent_sgemm_seconds(Pass pass, const Layer& layer, int64_t batch) {
  static std::map<std::tuple<int, const Layer*, int64_t>, double> cache;
  const auto key = std::make_tuple(static_cast<int>(pass), &layer, batch);
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const double seconds = time_equivalent_sgemm(pass, layer.shape(batch));
  cache.emplace(key, seconds);
  return seconds;
}

void bm_conv2d(benchmark::State& state, Pass pass, const Layer* layer) {
  const Conv2dShape s = layer->shape(state.range(0));
  // portable:1 runs with the AVX2 kernels off: im2col + GEMM even where the direct path applies.
  const bool portable = state.range(1) != 0;
  pb::kernels::cpu::set_avx2_kernels_enabled(!portable);
  const bool direct = pb::kernels::cpu::direct_conv2d_applies(s);
  const double flops = s.flops();
  const double sgemm_seconds = equivalent_sgemm_seconds(pass, *layer, s.N);

  const std::vector<float> x = random_floats(s.N * s.C * s.H * s.W, 4);       // (N,C,H,W)
  const std::vector<float> w = random_floats(s.K * s.C * s.R * s.S, 5);       // (K,C,R,S)
  const std::vector<float> dy = random_floats(s.N * s.K * s.P() * s.Q(), 6);  // (N,K,P,Q)
  std::vector<float> y(dy.size()), dx(x.size()), dw(w.size());

  const Clock::time_point start = Clock::now();
  for (auto _ : state) {
    switch (pass) {
      case Pass::kForward:
        pb::kernels::conv2d_forward_cpu<float>(s, x.data(), w.data(), nullptr, y.data());
        benchmark::DoNotOptimize(y.data());
        break;
      case Pass::kBackwardData:
        pb::kernels::conv2d_backward_data_cpu<float>(s, dy.data(), w.data(), dx.data());
        benchmark::DoNotOptimize(dx.data());
        break;
      case Pass::kBackwardWeight:
        pb::kernels::conv2d_backward_weight_cpu<float>(s, x.data(), dy.data(), dw.data(), nullptr);
        benchmark::DoNotOptimize(dw.data());
        break;
    }
    benchmark::ClobberMemory();
  }
  const double conv_seconds = std::chrono::duration<double>(Clock::now() - start).count() /
                              static_cast<double>(state.iterations());

  state.counters["gflops"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sgemm_gflops"] = benchmark::Counter(flops * 1e-9 / sgemm_seconds);
  state.counters["ratio_vs_sgemm"] = benchmark::Counter(sgemm_seconds / conv_seconds);
  pb::kernels::cpu::set_avx2_kernels_enabled(true);
  state.SetLabel(std::string(direct ? "direct " : "im2col ") + std::to_string(s.N) + "x" +
                 std::to_string(s.C) + "x" + std::to_string(s.H) + "x" + std::to_string(s.W) +
                 " -> " + std::to_string(s.K) + "x" + std::to_string(s.R) + "x" +
                 std::to_string(s.S) + " s" + std::to_string(s.stride_h));
}

void register_all() {
  for (const Layer& layer : kLayers) {
    for (Pass pass : {Pass::kForward, Pass::kBackwardData, Pass::kBackwardWeight}) {
      const std::string name = std::string("conv2d_") + pass_name(pass) + "/" + layer.name;
      benchmark::RegisterBenchmark(name.c_str(), bm_conv2d, pass, &layer)
          ->ArgNames({"N", "portable"})
          ->Args({32, 0})
          ->Args({32, 1})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Short runs by default: prepend --benchmark_min_time=0.1 unless the caller set it.
  std::vector<char*> args(argv, argv + argc);
  bool has_min_time = false;
  for (int i = 1; i < argc; ++i) {
    has_min_time = has_min_time || std::string(argv[i]).rfind("--benchmark_min_time", 0) == 0;
  }
  std::string default_min_time = "--benchmark_min_time=0.1";
  if (!has_min_time) args.insert(args.begin() + 1, default_min_time.data());
  int args_count = static_cast<int>(args.size());

  register_all();
  // OpenBLAS's build and the thread count bound every number here; record them with the results.
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("threads", std::to_string(pb::kernels::cpu::cpu_kernel_threads()));
  benchmark::Initialize(&args_count, args.data());
  if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
