// CPU batch norm (kernels/cpu/batchnorm.cpp) on ResNet-20's activation shapes at batch 128:
// training forward, backward and the fused BN+ReLU backward (which should cost the plain backward
// plus a mask), wall-clock time (the kernels run on the kernel thread pool).
// Counter gbytes: bytes the pass must touch (forward: read x twice for the statistics, once for
// y, write y; backward: x, dy (and y when fused) twice, write dx) per second.
//
// Usage: pb_bench_batchnorm_cpu [--benchmark_filter=relu]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/batchnorm.h"

namespace {

using pb::kernels::BatchNormShape;

std::vector<float> random_floats(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

enum class Pass { kForward, kBackward, kReluBackward };

// range(0) = C, range(1) = H*W; batch 128.
void bm_batchnorm(benchmark::State& state, Pass pass) {
  const BatchNormShape s{128, state.range(0), state.range(1), 128};
  const int64_t n = s.N * s.C * s.L;
  const std::vector<float> x = random_floats(n, 1), dy = random_floats(n, 2);
  const std::vector<float> gamma = random_floats(s.C, 3), beta = random_floats(s.C, 4);
  std::vector<float> y(n), dx(n), mean(s.C), invstd(s.C), rm(s.C, 0.0f), rv(s.C, 1.0f);
  std::vector<float> dgamma(s.C), dbeta(s.C);
  pb::kernels::batchnorm_relu_forward_train_cpu<float>(s, x.data(), gamma.data(), beta.data(),
                                                       1e-5f, 0.1f, y.data(), mean.data(),
                                                       invstd.data(), rm.data(), rv.data());
  for (auto _ : state) {
    switch (pass) {
      case Pass::kForward:
        pb::kernels::batchnorm_forward_train_cpu<float>(s, x.data(), gamma.data(), beta.data(),
                                                        1e-5f, 0.1f, dx.data(), mean.data(),
                                                        invstd.data(), rm.data(), rv.data());
        break;
      case Pass::kBackward:
        pb::kernels::batchnorm_backward_train_cpu<float>(s, x.data(), dy.data(), gamma.data(),
                                                         mean.data(), invstd.data(), dx.data(),
                                                         dgamma.data(), dbeta.data());
        break;
      case Pass::kReluBackward:
        pb::kernels::batchnorm_relu_backward_train_cpu<float>(
            s, x.data(), y.data(), dy.data(), gamma.data(), mean.data(), invstd.data(), dx.data(),
            dgamma.data(), dbeta.data());
        break;
    }
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  const double touched = pass == Pass::kForward ? 4.0 : pass == Pass::kBackward ? 5.0 : 7.0;
  state.counters["gbytes"] = benchmark::Counter(touched * n * sizeof(float) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK_CAPTURE(bm_batchnorm, fwd_train, Pass::kForward)
    ->Args({16, 28 * 28})
    ->Args({32, 14 * 14})
    ->Args({64, 7 * 7})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_batchnorm, bwd_train, Pass::kBackward)
    ->Args({16, 28 * 28})
    ->Args({32, 14 * 14})
    ->Args({64, 7 * 7})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_batchnorm, relu_bwd_train, Pass::kReluBackward)
    ->Args({16, 28 * 28})
    ->Args({32, 14 * 14})
    ->Args({64, 7 * 7})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
