// CUDA batch norm (plain, ghost, fused with ReLU) and layer norm against their CPU references
// (kernels/cpu/batchnorm.cpp, layernorm.cpp) run in float on the same random inputs. Every
// output is poisoned with NaN (all bits set) before the launch, so an element the kernel fails to
// write shows up as a mismatch.
//
// Shapes: odd ones (C = 7, L = 33*33 = 1089: the scalar path), ghost groups (V = 8, V = 4 with
// several groups in flight per block, V = 1), L = 1 ((N,C) inputs), L % 4 == 0 (the float4
// path) also with misaligned pointers (forcing the scalar path), a ResNet-sized one
// (N=64, C=64, L=56*56), null gamma/beta/running buffers, and channels offset by up to +32 so
// that |mean| >> std.
//
// Tolerances (|cuda - cpu| <= atol + rtol |cpu|; NaN never passes):
//   save_mean, save_invstd, running stats: atol 1e-6, rtol 1e-6. Both sides compute them in
//     double (CPU two-pass, CUDA shifted sums): they agree to ~1e-15 before the float rounding,
//     so they differ by at most 1 ulp (1.2e-7 relative) at a rounding tie.
//   train y: atol 1e-5, rtol 1e-5. The same float expression on the saved statistics; a 1-ulp
//     difference in mean (<= 3.8e-6 at |mean| <= 35) times invstd * gamma (<= 1.3) moves y by
//     < 5e-6.
//   train dx, dgamma, dbeta: atol 1e-5, rtol 1e-5. Double sums of up to 2e5 terms that differ
//     only in summation order (~1e-13 relative), then rounded to float.
//   eval y, eval dx: bitwise (the same IEEE float operations in the same order).
//   eval dgamma, dbeta: atol 1e-5, rtol 1e-6 (double sums, order only).
//   layer norm: y, dx, dgamma, dbeta as train batch norm (same reasoning).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/cuda/check.h"
#include "kernels/layernorm.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

// A device array of n floats starting `offset` floats into its allocation (offset 1 makes the
// pointer 4 mod 16: the kernels' scalar paths), freed on scope exit.
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n, int64_t offset = 0) : n_(n), offset_(offset) {
    PB_CUDA_CHECK(cudaMalloc(&base_, alloc_bytes()));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(base_); }

  float* get() { return base_ + offset_; }
  void upload(const std::vector<float>& host) {
    ASSERT_EQ(static_cast<int64_t>(host.size()), n_);
    PB_CUDA_CHECK(cudaMemcpy(get(), host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice));
  }
  void poison() { PB_CUDA_CHECK(cudaMemset(base_, 0xFF, alloc_bytes())); }  // quiet NaNs
  std::vector<float> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> host(static_cast<size_t>(n_));
    PB_CUDA_CHECK(cudaMemcpy(host.data(), get(), n_ * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t alloc_bytes() const { return static_cast<size_t>(n_ + offset_ + 1) * sizeof(float); }
  int64_t n_, offset_;
  float* base_ = nullptr;
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol,
                  double rtol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double diff = std::abs(static_cast<double>(gpu[i]) - static_cast<double>(cpu[i]));
    if (!(diff <= atol + rtol * std::abs(static_cast<double>(cpu[i]))) && ++mismatches <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << gpu[i] << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

void expect_bitwise_equal(const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << gpu[i] << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

struct BnCase {
  BatchNormShape s;
  bool affine = true;       // gamma/beta given (else nullptr)
  bool running = true;      // running stats given (else nullptr)
  int64_t offset = 0;       // pointer offset of the (N,C,L) tensors, in floats
  float channel_shift = 0;  // x[n,c,l] += c * channel_shift
};

std::string name_of(const BnCase& k) {
  return "N=" + std::to_string(k.s.N) + " C=" + std::to_string(k.s.C) +
         " L=" + std::to_string(k.s.L) + " V=" + std::to_string(k.s.V) +
         (k.affine ? "" : " no-affine") + (k.running ? "" : " no-running") +
         (k.offset ? " misaligned" : "");
}

const std::vector<BnCase> kBnCases = {
    {{64, 7, 33 * 33, 64}, true, true, 0, 5.0f},   // odd, scalar path, one group
    {{64, 7, 33 * 33, 8}, true, true, 0, 5.0f},    // ghost, 8 groups
    {{32, 16, 196, 32}, true, true, 0, 2.0f},      // float4 path
    {{32, 16, 196, 4}, true, true, 0, 2.0f},       // ghost float4, several groups per round
    {{32, 16, 196, 4}, true, true, 1, 2.0f},       // the same, misaligned: scalar path
    {{256, 5, 1, 256}, true, true, 0, 1.0f},       // (N,C), L = 1
    {{256, 5, 1, 16}, true, true, 0, 1.0f},        // (N,C) ghost
    {{6, 3, 3, 1}, true, true, 0, 1.0f},           // V = 1: 6 groups of 3 values
    {{1, 4, 1, 1}, true, true, 0, 1.0f},           // one value per statistic (var 0)
    {{5, 3, 7, 5}, false, false, 0, 3.0f},         // null gamma/beta/running
    {{64, 64, 56 * 56, 32}, true, true, 0, 0.5f},  // ResNet-sized, 2 ghost groups
};

// Runs forward train/eval and backward train/eval (plain or fused with ReLU) on both sides.
void check_batchnorm(const BnCase& k, bool relu) {
  const BatchNormShape& s = k.s;
  const std::string what = name_of(k) + (relu ? " relu" : "");
  const int64_t count = s.N * s.C * s.L, G = s.groups(), stats = G * s.C;
  std::vector<float> x = random_floats(count, 11, -1.0f, 3.0f);
  for (int64_t i = 0; i < count; ++i) x[i] += static_cast<float>((i / s.L) % s.C) * k.channel_shift;
  const std::vector<float> dy = random_floats(count, 12, -1.0f, 1.0f);
  const std::vector<float> gamma = random_floats(s.C, 13, 0.5f, 1.5f);
  const std::vector<float> beta = random_floats(s.C, 14, -0.5f, 0.5f);
  const std::vector<float> rm0 = random_floats(s.C, 15, -1.0f, 1.0f);
  const std::vector<float> rv0 = random_floats(s.C, 16, 0.5f, 2.0f);
  const float eps = 1e-5f, momentum = 0.1f;
  const float* g_cpu = k.affine ? gamma.data() : nullptr;
  const float* b_cpu = k.affine ? beta.data() : nullptr;

  // CPU reference.
  std::vector<float> y(count), mean(stats), invstd(stats), rm = rm0, rv = rv0;
  std::vector<float> dx(count), dgamma(s.C), dbeta(s.C);
  std::vector<float> ye(count), dxe(count), dgammae(s.C), dbetae(s.C);
  auto* fwd_train =
      relu ? batchnorm_relu_forward_train_cpu<float> : batchnorm_forward_train_cpu<float>;
  auto* fwd_eval =
      relu ? batchnorm_relu_forward_eval_cpu<float> : batchnorm_forward_eval_cpu<float>;
  fwd_train(s, x.data(), g_cpu, b_cpu, eps, momentum, y.data(), mean.data(), invstd.data(),
            k.running ? rm.data() : nullptr, k.running ? rv.data() : nullptr);
  fwd_eval(s, x.data(), g_cpu, b_cpu, rm0.data(), rv0.data(), eps, ye.data());
  if (relu) {
    batchnorm_relu_backward_train_cpu<float>(s, x.data(), y.data(), dy.data(), g_cpu, mean.data(),
                                             invstd.data(), dx.data(), dgamma.data(), dbeta.data());
    batchnorm_relu_backward_eval_cpu<float>(s, x.data(), ye.data(), dy.data(), g_cpu, rm0.data(),
                                            rv0.data(), eps, dxe.data(), dgammae.data(),
                                            dbetae.data());
  } else {
    batchnorm_backward_train_cpu<float>(s, x.data(), dy.data(), g_cpu, mean.data(), invstd.data(),
                                        dx.data(), dgamma.data(), dbeta.data());
    batchnorm_backward_eval_cpu<float>(s, x.data(), dy.data(), g_cpu, rm0.data(), rv0.data(), eps,
                                       dxe.data(), dgammae.data(), dbetae.data());
  }

  // CUDA.
  DeviceArray d_x(count, k.offset), d_dy(count, k.offset), d_y(count, k.offset),
      d_dx(count, k.offset), d_gamma(s.C), d_beta(s.C), d_mean(stats), d_invstd(stats), d_rm(s.C),
      d_rv(s.C), d_dgamma(s.C), d_dbeta(s.C);
  d_x.upload(x);
  d_dy.upload(dy);
  d_gamma.upload(gamma);
  d_beta.upload(beta);
  d_rm.upload(rm0);
  d_rv.upload(rv0);
  float* g_gpu = k.affine ? d_gamma.get() : nullptr;
  float* b_gpu = k.affine ? d_beta.get() : nullptr;

  d_y.poison();
  d_mean.poison();
  d_invstd.poison();
  auto* fwd_train_cuda = relu ? batchnorm_relu_forward_train_cuda : batchnorm_forward_train_cuda;
  fwd_train_cuda(nullptr, s, d_x.get(), g_gpu, b_gpu, eps, momentum, d_y.get(), d_mean.get(),
                 d_invstd.get(), k.running ? d_rm.get() : nullptr,
                 k.running ? d_rv.get() : nullptr);
  expect_close(d_mean.download(), mean, 1e-6, 1e-6, what + " save_mean");
  expect_close(d_invstd.download(), invstd, 1e-6, 1e-6, what + " save_invstd");
  expect_close(d_y.download(), y, 1e-5, 1e-5, what + " train y");
  expect_close(d_rm.download(), rm, 1e-6, 1e-6, what + " running_mean");
  expect_close(d_rv.download(), rv, 1e-6, 1e-6, what + " running_var");

  // Backward from the CPU's saved statistics (and, fused, the CPU's y), so that the comparison
  // isolates the backward kernel.
  d_mean.upload(mean);
  d_invstd.upload(invstd);
  d_y.upload(y);
  d_dx.poison();
  d_dgamma.poison();
  d_dbeta.poison();
  if (relu) {
    batchnorm_relu_backward_train_cuda(nullptr, s, d_x.get(), d_y.get(), d_dy.get(), g_gpu,
                                       d_mean.get(), d_invstd.get(), d_dx.get(), d_dgamma.get(),
                                       d_dbeta.get());
  } else {
    batchnorm_backward_train_cuda(nullptr, s, d_x.get(), d_dy.get(), g_gpu, d_mean.get(),
                                  d_invstd.get(), d_dx.get(), d_dgamma.get(), d_dbeta.get());
  }
  expect_close(d_dx.download(), dx, 1e-5, 1e-5, what + " train dx");
  expect_close(d_dgamma.download(), dgamma, 1e-5, 1e-5, what + " train dgamma");
  expect_close(d_dbeta.download(), dbeta, 1e-5, 1e-5, what + " train dbeta");

  // Eval, from the initial running statistics.
  d_rm.upload(rm0);
  d_rv.upload(rv0);
  d_y.poison();
  auto* fwd_eval_cuda = relu ? batchnorm_relu_forward_eval_cuda : batchnorm_forward_eval_cuda;
  fwd_eval_cuda(nullptr, s, d_x.get(), g_gpu, b_gpu, d_rm.get(), d_rv.get(), eps, d_y.get());
  expect_bitwise_equal(d_y.download(), ye, what + " eval y");

  d_y.upload(ye);
  d_dx.poison();
  d_dgamma.poison();
  d_dbeta.poison();
  if (relu) {
    batchnorm_relu_backward_eval_cuda(nullptr, s, d_x.get(), d_y.get(), d_dy.get(), g_gpu,
                                      d_rm.get(), d_rv.get(), eps, d_dx.get(), d_dgamma.get(),
                                      d_dbeta.get());
  } else {
    batchnorm_backward_eval_cuda(nullptr, s, d_x.get(), d_dy.get(), g_gpu, d_rm.get(), d_rv.get(),
                                 eps, d_dx.get(), d_dgamma.get(), d_dbeta.get());
  }
  expect_bitwise_equal(d_dx.download(), dxe, what + " eval dx");
  expect_close(d_dgamma.download(), dgammae, 1e-5, 1e-6, what + " eval dgamma");
  expect_close(d_dbeta.download(), dbetae, 1e-5, 1e-6, what + " eval dbeta");

  // Null dgamma/dbeta are allowed: dx alone.
  d_dx.poison();
  batchnorm_backward_eval_cuda(nullptr, s, d_x.get(), d_dy.get(), g_gpu, d_rm.get(), d_rv.get(),
                               eps, d_dx.get(), nullptr, nullptr);
  if (!relu) expect_bitwise_equal(d_dx.download(), dxe, what + " eval dx without dgamma/dbeta");
}

TEST(BatchNormCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const BnCase& k : kBnCases) check_batchnorm(k, /*relu=*/false);
}

TEST(BatchNormCuda, FusedReluMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const BnCase& k : kBnCases) check_batchnorm(k, /*relu=*/true);
}

// The same inputs give the same bits on every run (fixed reduction orders, no atomics).
TEST(BatchNormCuda, Deterministic) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const BatchNormShape s{64, 8, 30 * 30, 16};
  const int64_t count = s.N * s.C * s.L, stats = s.groups() * s.C;
  DeviceArray d_x(count), d_dy(count), d_y(count), d_dx(count), d_mean(stats), d_invstd(stats),
      d_rm(s.C), d_rv(s.C), d_dgamma(s.C), d_dbeta(s.C);
  d_x.upload(random_floats(count, 21, -2.0f, 2.0f));
  d_dy.upload(random_floats(count, 22, -1.0f, 1.0f));
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 3; ++run) {
    d_rm.upload(std::vector<float>(s.C, 0.0f));
    d_rv.upload(std::vector<float>(s.C, 1.0f));
    batchnorm_forward_train_cuda(nullptr, s, d_x.get(), nullptr, nullptr, 1e-5f, 0.1f, d_y.get(),
                                 d_mean.get(), d_invstd.get(), d_rm.get(), d_rv.get());
    batchnorm_backward_train_cuda(nullptr, s, d_x.get(), d_dy.get(), nullptr, d_mean.get(),
                                  d_invstd.get(), d_dx.get(), d_dgamma.get(), d_dbeta.get());
    const std::vector<std::vector<float>> outs = {d_y.download(),      d_mean.download(),
                                                  d_rv.download(),     d_dx.download(),
                                                  d_dgamma.download(), d_dbeta.download()};
    if (run == 0) {
      first = outs;
    } else {
      for (size_t i = 0; i < outs.size(); ++i)
        expect_bitwise_equal(outs[i], first[i], "run " + std::to_string(run));
    }
  }
}

// Empty batches launch nothing; the backward passes zero dgamma/dbeta as the CPU does.
TEST(BatchNormCuda, EmptyBatch) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const BatchNormShape s{0, 3, 4, 2};
  DeviceArray d_dgamma(3), d_dbeta(3);
  d_dgamma.poison();
  d_dbeta.poison();
  batchnorm_forward_train_cuda(nullptr, s, nullptr, nullptr, nullptr, 1e-5f, 0.1f, nullptr, nullptr,
                               nullptr, nullptr, nullptr);
  batchnorm_forward_eval_cuda(nullptr, s, nullptr, nullptr, nullptr, nullptr, nullptr, 1e-5f,
                              nullptr);
  batchnorm_backward_train_cuda(nullptr, s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                d_dgamma.get(), d_dbeta.get());
  EXPECT_EQ(d_dgamma.download(), std::vector<float>(3, 0.0f));
  EXPECT_EQ(d_dbeta.download(), std::vector<float>(3, 0.0f));
  d_dgamma.poison();
  batchnorm_backward_eval_cuda(nullptr, s, nullptr, nullptr, nullptr, nullptr, nullptr, 1e-5f,
                               nullptr, d_dgamma.get(), nullptr);
  EXPECT_EQ(d_dgamma.download(), std::vector<float>(3, 0.0f));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// ---- layer norm --------------------------------------------------------------------------------

struct LnCase {
  int64_t M, D;
  bool affine;
};

TEST(LayerNormCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  // Warp-per-row (D <= 1024) and block-per-row shapes, odd sizes, one row, wide rows.
  const std::vector<LnCase> cases = {{1, 1, true},      {7, 33, true},    {300, 768, true},
                                     {65, 1024, false}, {33, 1025, true}, {5, 4099, true},
                                     {2, 20000, false}, {4096, 96, true}};
  for (const LnCase& k : cases) {
    const std::string what = "M=" + std::to_string(k.M) + " D=" + std::to_string(k.D);
    const int64_t count = k.M * k.D;
    std::vector<float> x = random_floats(count, 31, -1.0f, 3.0f);
    for (int64_t i = 0; i < count; ++i) x[i] += static_cast<float>(i / k.D % 5) * 10.0f;
    const std::vector<float> dy = random_floats(count, 32, -1.0f, 1.0f);
    const std::vector<float> gamma = random_floats(k.D, 33, 0.5f, 1.5f);
    const std::vector<float> beta = random_floats(k.D, 34, -0.5f, 0.5f);
    const float* g_cpu = k.affine ? gamma.data() : nullptr;
    const float* b_cpu = k.affine ? beta.data() : nullptr;
    std::vector<float> y(count), mean(k.M), invstd(k.M), dx(count), dgamma(k.D), dbeta(k.D);
    layernorm_forward_cpu<float>(k.M, k.D, x.data(), g_cpu, b_cpu, 1e-5f, y.data(), mean.data(),
                                 invstd.data());
    layernorm_backward_cpu<float>(k.M, k.D, x.data(), dy.data(), g_cpu, mean.data(), invstd.data(),
                                  dx.data(), dgamma.data(), dbeta.data());

    DeviceArray d_x(count), d_dy(count), d_y(count), d_dx(count), d_gamma(k.D), d_beta(k.D),
        d_mean(k.M), d_invstd(k.M), d_dgamma(k.D), d_dbeta(k.D);
    d_x.upload(x);
    d_dy.upload(dy);
    d_gamma.upload(gamma);
    d_beta.upload(beta);
    float* g_gpu = k.affine ? d_gamma.get() : nullptr;
    float* b_gpu = k.affine ? d_beta.get() : nullptr;
    d_y.poison();
    d_mean.poison();
    d_invstd.poison();
    layernorm_forward_cuda(nullptr, k.M, k.D, d_x.get(), g_gpu, b_gpu, 1e-5f, d_y.get(),
                           d_mean.get(), d_invstd.get());
    expect_close(d_mean.download(), mean, 1e-6, 1e-6, what + " mean");
    expect_close(d_invstd.download(), invstd, 1e-6, 1e-6, what + " invstd");
    expect_close(d_y.download(), y, 1e-5, 1e-5, what + " y");

    d_mean.upload(mean);
    d_invstd.upload(invstd);
    d_dx.poison();
    d_dgamma.poison();
    d_dbeta.poison();
    layernorm_backward_cuda(nullptr, k.M, k.D, d_x.get(), d_dy.get(), g_gpu, d_mean.get(),
                            d_invstd.get(), d_dx.get(), d_dgamma.get(), d_dbeta.get());
    expect_close(d_dx.download(), dx, 1e-5, 1e-5, what + " dx");
    expect_close(d_dgamma.download(), dgamma, 1e-5, 1e-5, what + " dgamma");
    expect_close(d_dbeta.download(), dbeta, 1e-5, 1e-5, what + " dbeta");
  }
}

}  // namespace
}  // namespace pb::kernels
