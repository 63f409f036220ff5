// gemm_cuda (hand-written FP32 SGEMM) against cuBLAS cublasSgemm, both pure FP32.
//
// Baseline settings: cublasSetMathMode(CUBLAS_DEFAULT_MATH), which never uses TF32 tensor cores
// for an FP32 GEMM (TF32 needs CUBLAS_TF32_TENSOR_OP_MATH), and NVIDIA_TF32_OVERRIDE=0 set before
// any library starts, which disables TF32 process-wide whatever a library would choose. So both
// sides run FP32 FFMA and the comparison is like for like.
//
// cuBLAS is column-major. A row-major C(M,N) = op(A) op(B) is, read column-major, the (N,M)
// matrix C^T = op(B)^T op(A)^T; the row-major buffers of B and A read column-major are B^T and
// A^T already, so the call is cublasSgemm(opB, opA, N, M, K, B, ldb, A, lda, C, ldc) with the
// same op flags and leading dimensions.
//
// Per shape (once): random inputs (never zeros), one run of each, relative difference checked
// (<= 1e-4, else SkipWithError: two FP32 orders of summation differ by ~2e-6 at K = 4096, an
// indexing bug by O(1); tests/cuda/test_gemm_cuda.cpp holds the tight 1e-5 check vs double), then
// the median of 20 event-timed runs of each after warm-up. The benchmark's own time is ours (manual
// time, events). Counters: TFLOP/s (ours, 2MNK / median), cublas_TFLOP/s, ratio_vs_cublas = cuBLAS
// time / our time (>= 0.9 is the goal at 4096^3). The geometric mean of the ratios is printed at
// the end.
#include <cublas_v2.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/gemm.h"

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    const cublasStatus_t pb_cublas_status_ = (expr);                                           \
    if (pb_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                          \
      throw std::runtime_error(std::string("cuBLAS error ") +                                  \
                               cublasGetStatusString(pb_cublas_status_) +                      \
                               " in `" #expr "` at " __FILE__ ":" + std::to_string(__LINE__)); \
    }                                                                                          \
  } while (0)

namespace pb::bench {
namespace {

using kernels::Trans;

cublasHandle_t cublas() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // FP32, no TF32
    CUBLAS_CHECK(cublasSetStream(h, nullptr));
    return h;
  }();
  return handle;
}

struct GemmShape {
  const char* name;
  int64_t M, N, K;
  Trans ta, tb;
};

// One shape's buffers and one-time measurements, kept across the benchmark's repeated calls.
struct GemmSetup {
  GemmSetup(const GemmShape& s, int64_t lda_, int64_t ldb_)
      : A(static_cast<size_t>((s.ta == Trans::No ? s.M : s.K) * lda_)),
        B(static_cast<size_t>((s.tb == Trans::No ? s.K : s.N) * ldb_)),
        C(static_cast<size_t>(s.M * s.N)),
        C_blas(static_cast<size_t>(s.M * s.N)),
        lda(lda_),
        ldb(ldb_),
        ldc(s.N) {}
  DeviceBuffer A, B, C, C_blas;
  int64_t lda, ldb, ldc;
  double ours_ms = 0, cublas_ms = 0;
  std::string error;  // set when the shape cannot be measured (mismatch, ...)
};

std::map<std::string, double>& ratios() {
  static std::map<std::string, double> r;
  return r;
}

void run_ours(const GemmShape& s, GemmSetup& g) {
  kernels::gemm_cuda(nullptr, s.ta, s.tb, s.M, s.N, s.K, 1.0f, g.A.get(), g.lda, g.B.get(), g.ldb,
                     0.0f, g.C.get(), g.ldc);
}

void run_cublas(const GemmShape& s, GemmSetup& g) {
  const float alpha = 1.0f, beta = 0.0f;
  const auto op = [](Trans t) { return t == Trans::Yes ? CUBLAS_OP_T : CUBLAS_OP_N; };
  CUBLAS_CHECK(cublasSgemm(cublas(), op(s.tb), op(s.ta), static_cast<int>(s.N),
                           static_cast<int>(s.M), static_cast<int>(s.K), &alpha, g.B.get(),
                           static_cast<int>(g.ldb), g.A.get(), static_cast<int>(g.lda), &beta,
                           g.C_blas.get(), static_cast<int>(g.ldc)));
}

double rel_diff(const DeviceBuffer& out, const DeviceBuffer& ref) {
  std::vector<float> a(out.count()), b(ref.count());
  PB_CUDA_CHECK(cudaMemcpy(a.data(), out.get(), out.bytes(), cudaMemcpyDeviceToHost));
  PB_CUDA_CHECK(cudaMemcpy(b.data(), ref.get(), ref.bytes(), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);  // NaN when ours left NaN behind
}

std::unique_ptr<GemmSetup> make_setup(const GemmShape& s) {
  // Tightly packed operands: A (M,K) or (K,M), B (K,N) or (N,K).
  auto g =
      std::make_unique<GemmSetup>(s, s.ta == Trans::No ? s.K : s.M, s.tb == Trans::No ? s.N : s.K);
  fill_uniform(g->A, 11);
  fill_uniform(g->B, 12);
  PB_CUDA_CHECK(cudaMemset(g->C.get(), 0xFF, g->C.bytes()));  // NaN: unwritten shows
  run_ours(s, *g);
  run_cublas(s, *g);
  PB_CUDA_CHECK(cudaDeviceSynchronize());
  const double diff = rel_diff(g->C, g->C_blas);
  if (!(diff <= 1e-4)) {
    g->error = "gemm_cuda and cuBLAS disagree: relative difference " + std::to_string(diff);
    return g;
  }
  g->ours_ms = median_ms(nullptr, [&] { run_ours(s, *g); });
  g->cublas_ms = median_ms(nullptr, [&] { run_cublas(s, *g); });
  return g;
}

void BM_Gemm(benchmark::State& state, GemmShape s) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  try {
    // Benchmark calls this several times per shape: set up and measure once, one shape's
    // buffers alive at a time.
    static std::map<std::string, std::unique_ptr<GemmSetup>> setups;
    auto it = setups.find(s.name);
    if (it == setups.end()) {
      setups.clear();
      it = setups.emplace(s.name, make_setup(s)).first;
      if (it->second->error.empty()) {
        ratios()[s.name] = it->second->cublas_ms / it->second->ours_ms;
      }
    }
    GemmSetup& g = *it->second;
    if (!g.error.empty()) {
      state.SkipWithError(g.error.c_str());
      return;
    }
    run_timed(state, nullptr, [&] { run_ours(s, g); });
    const double flops = 2.0 * s.M * s.N * s.K;
    state.counters["TFLOP/s"] = flops / (g.ours_ms * 1e-3) / 1e12;
    state.counters["cublas_TFLOP/s"] = flops / (g.cublas_ms * 1e-3) / 1e12;
    state.counters["ratio_vs_cublas"] = g.cublas_ms / g.ours_ms;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

const std::vector<GemmShape> kShapes = {
    {"4096^3_NN", 4096, 4096, 4096, Trans::No, Trans::No},  // the target
    {"4096^3_NT", 4096, 4096, 4096, Trans::No, Trans::Yes},
    {"4096^3_TN", 4096, 4096, 4096, Trans::Yes, Trans::No},
    {"2048^3_NN", 2048, 2048, 2048, Trans::No, Trans::No},
    // ResNet-50's classifier at batch 256: y = x w^T, dx = dy w, dw = dy^T x
    {"r50_fc_fwd_256x1000x2048_NT", 256, 1000, 2048, Trans::No, Trans::Yes},
    {"r50_fc_dgrad_256x2048x1000_NN", 256, 2048, 1000, Trans::No, Trans::No},
    {"r50_fc_wgrad_1000x2048x256_TN", 1000, 2048, 256, Trans::Yes, Trans::No},
    // a 1x1 convolution of ResNet-50 conv3 as one GEMM: (K, C) x (C, N*H*W) at batch 8
    {"r50_1x1_512x25088x128_NN", 512, 25088, 128, Trans::No, Trans::No},
    {"odd_3001x2999x1001_NN", 3001, 2999, 1001, Trans::No, Trans::No},
};

const bool registered = [] {
  for (const GemmShape& s : kShapes) {
    benchmark::RegisterBenchmark((std::string("gemm/") + s.name).c_str(), BM_Gemm, s)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
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
  const auto& r = pb::bench::ratios();
  if (!r.empty()) {
    double log_sum = 0;
    for (const auto& [name, ratio] : r) log_sum += std::log(ratio);
    std::printf(
        "gemm_cuda vs cuBLAS SGEMM: geometric-mean time ratio (cuBLAS / ours) %.3f over %zu "
        "shapes\n",
        std::exp(log_sum / static_cast<double>(r.size())), r.size());
  }
  return 0;
}
