// CUDA elementwise and dropout kernels against their CPU references (kernels/cpu/*.cpp) on random
// inputs of several sizes, odd ones included. Every output buffer is poisoned with NaN (all bits
// set) before the launch, so an element the kernel fails to write shows up as a mismatch.
//
// The float4 kernels (16-byte aligned pointers) are checked at every size (the n % 4 tail
// included) and the scalar kernels through pointers one float into their allocation.
//
// Tolerances (see the note at the top of kernels/cuda/elementwise.cu):
//   relu, add, add_relu, scale, fill, dropout: exact (single IEEE operations; the same Philox
//     draw).
//   axpy: 2 ulp of |alpha x| + |y| (nvcc fuses y + alpha x into one fma; the CPU rounds twice).
//   gelu forward/backward: 1e-6 absolute + 4e-6 relative (normcdff <= 5 ulp, expf <= 2 ulp on the
//     GPU against glibc's ~1 ulp erfcf/expf; the products add a few ulp more).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

const std::vector<int64_t> kSizes = {1, 7, 256, 1000, 1000003};

// A float device buffer of n elements, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  float* get() { return ptr_; }
  size_t bytes() const { return static_cast<size_t>(n_ > 0 ? n_ : 1) * sizeof(float); }
  void upload(const std::vector<float>& host) {
    PB_CUDA_CHECK(
        cudaMemcpy(ptr_, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  // Every byte 0xFF: a quiet NaN in each float.
  void poison() { PB_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes())); }
  std::vector<float> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> host(static_cast<size_t>(n_));
    PB_CUDA_CHECK(
        cudaMemcpy(host.data(), ptr_, host.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  int64_t n_;
  float* ptr_ = nullptr;
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

// Bitwise equality, so that NaN poison left in the output is caught.
void expect_bitwise_equal(const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << what << " n=" << gpu.size() << " i=" << i << ": cuda " << gpu[i]
                    << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what << " n=" << gpu.size();
}

// |gpu - cpu| <= atol + rtol |cpu|, NaN never passes.
void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol,
                  double rtol, const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double diff = std::abs(static_cast<double>(gpu[i]) - static_cast<double>(cpu[i]));
    if (!(diff <= atol + rtol * std::abs(static_cast<double>(cpu[i]))) && ++mismatches <= 5) {
      ADD_FAILURE() << what << " n=" << gpu.size() << " i=" << i << ": cuda " << gpu[i]
                    << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what << " n=" << gpu.size();
}

TEST(ElementwiseCuda, ReluMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const int64_t n : kSizes) {
    const std::vector<float> x = random_floats(n, 1), dy = random_floats(n, 2);
    std::vector<float> y_cpu(n), dx_cpu(n);
    relu_forward_cpu<float>(n, x.data(), y_cpu.data());
    relu_backward_cpu<float>(n, x.data(), dy.data(), dx_cpu.data());

    DeviceBuffer d_x(n), d_dy(n), d_y(n), d_dx(n);
    d_x.upload(x);
    d_dy.upload(dy);
    d_y.poison();
    d_dx.poison();
    relu_forward_cuda(nullptr, n, d_x.get(), d_y.get());
    relu_backward_cuda(nullptr, n, d_x.get(), d_dy.get(), d_dx.get());
    expect_bitwise_equal(d_y.download(), y_cpu, "relu_forward");
    expect_bitwise_equal(d_dx.download(), dx_cpu, "relu_backward");

    relu_forward_cuda(nullptr, n, d_x.get(), d_x.get());  // in place
    expect_bitwise_equal(d_x.download(), y_cpu, "relu_forward in place");
  }
}

TEST(ElementwiseCuda, GeluMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const int64_t n : kSizes) {
    const std::vector<float> x = random_floats(n, 3, -8.0f, 8.0f), dy = random_floats(n, 4);
    std::vector<float> y_cpu(n), dx_cpu(n);
    gelu_forward_cpu<float>(n, x.data(), y_cpu.data());
    gelu_backward_cpu<float>(n, x.data(), dy.data(), dx_cpu.data());

    DeviceBuffer d_x(n), d_dy(n), d_y(n), d_dx(n);
    d_x.upload(x);
    d_dy.upload(dy);
    d_y.poison();
    d_dx.poison();
    gelu_forward_cuda(nullptr, n, d_x.get(), d_y.get());
    gelu_backward_cuda(nullptr, n, d_x.get(), d_dy.get(), d_dx.get());
    expect_close(d_y.download(), y_cpu, 1e-6, 4e-6, "gelu_forward");
    expect_close(d_dx.download(), dx_cpu, 1e-6, 4e-6, "gelu_backward");
  }
}

TEST(ElementwiseCuda, AddScaleAxpyFillMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const float alpha = -0.37f;
  for (const int64_t n : kSizes) {
    const std::vector<float> a = random_floats(n, 5), b = random_floats(n, 6);
    std::vector<float> add_cpu_out(n), scale_cpu_out(n), axpy_cpu_out = b, fill_cpu_out(n);
    add_cpu<float>(n, a.data(), b.data(), add_cpu_out.data());
    scale_cpu<float>(n, alpha, a.data(), scale_cpu_out.data());
    axpy_cpu<float>(n, alpha, a.data(), axpy_cpu_out.data());
    fill_cpu<float>(n, 2.5f, fill_cpu_out.data());

    DeviceBuffer d_a(n), d_b(n), d_out(n);
    d_a.upload(a);
    d_b.upload(b);
    d_out.poison();
    add_cuda(nullptr, n, d_a.get(), d_b.get(), d_out.get());
    expect_bitwise_equal(d_out.download(), add_cpu_out, "add");
    d_out.poison();
    scale_cuda(nullptr, n, alpha, d_a.get(), d_out.get());
    expect_bitwise_equal(d_out.download(), scale_cpu_out, "scale");
    d_out.poison();
    fill_cuda(nullptr, n, 2.5f, d_out.get());
    expect_bitwise_equal(d_out.download(), fill_cpu_out, "fill");

    // axpy accumulates into y, so y starts from b rather than from poison.
    axpy_cuda(nullptr, n, alpha, d_a.get(), d_b.get());
    const std::vector<float> axpy_gpu = d_b.download();
    ASSERT_EQ(axpy_gpu.size(), axpy_cpu_out.size());
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double bound = 2 * 1.1920929e-7 * (std::abs(alpha * a[i]) + std::abs(b[i]));
      if (!(std::abs(axpy_gpu[i] - axpy_cpu_out[i]) <= bound) && ++mismatches <= 5) {
        ADD_FAILURE() << "axpy n=" << n << " i=" << i << ": cuda " << axpy_gpu[i] << " vs cpu "
                      << axpy_cpu_out[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << "axpy n=" << n;
  }
}

// n == 0 launches nothing (pointers are never touched) and leaves no error behind.
TEST(ElementwiseCuda, EmptyLaunchesNothing) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  relu_forward_cuda(nullptr, 0, nullptr, nullptr);
  relu_backward_cuda(nullptr, 0, nullptr, nullptr, nullptr);
  gelu_forward_cuda(nullptr, 0, nullptr, nullptr);
  gelu_backward_cuda(nullptr, 0, nullptr, nullptr, nullptr);
  add_cuda(nullptr, 0, nullptr, nullptr, nullptr);
  add_relu_cuda(nullptr, 0, nullptr, nullptr, nullptr);
  add_relu_backward_cuda(nullptr, 0, nullptr, nullptr, nullptr);
  scale_cuda(nullptr, 0, 2.0f, nullptr, nullptr);
  axpy_cuda(nullptr, 0, 2.0f, nullptr, nullptr);
  fill_cuda(nullptr, 0, 2.0f, nullptr);
  dropout_forward_cuda(nullptr, 0, 0.5f, 1, 2, nullptr, nullptr);
  dropout_backward_cuda(nullptr, 0, 0.0f, 1, 2, nullptr, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// The dropout mask (and the kept values) on the GPU equal the CPU's exactly, forward and
// backward, for several p, sizes, seeds and offsets.
TEST(DropoutCuda, MatchesCpuExactly) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const int64_t n : kSizes) {
    // Inputs are never 0, so a 0 output means "dropped" and the mask is visible in the values.
    std::vector<float> x = random_floats(n, 7, 0.5f, 4.0f), dy = random_floats(n, 8, 0.5f, 4.0f);
    for (const float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
      const uint64_t seed = 0x1234567890abcdefULL, offset = static_cast<uint64_t>(n) * 3 + 1;
      std::vector<float> y_cpu(n), dx_cpu(n);
      dropout_forward_cpu<float>(n, p, seed, offset, x.data(), y_cpu.data());
      dropout_backward_cpu<float>(n, p, seed, offset, dy.data(), dx_cpu.data());

      DeviceBuffer d_x(n), d_dy(n), d_y(n), d_dx(n);
      d_x.upload(x);
      d_dy.upload(dy);
      d_y.poison();
      d_dx.poison();
      dropout_forward_cuda(nullptr, n, p, seed, offset, d_x.get(), d_y.get());
      dropout_backward_cuda(nullptr, n, p, seed, offset, d_dy.get(), d_dx.get());
      const std::vector<float> y_gpu = d_y.download(), dx_gpu = d_dx.download();
      expect_bitwise_equal(y_gpu, y_cpu, "dropout_forward");
      expect_bitwise_equal(dx_gpu, dx_cpu, "dropout_backward");
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(y_gpu[i] != 0.0f, dx_gpu[i] != 0.0f) << "mask differs, p=" << p << " i=" << i;
      }

      dropout_forward_cuda(nullptr, n, p, seed, offset, d_x.get(), d_x.get());  // in place
      expect_bitwise_equal(d_x.download(), y_cpu, "dropout_forward in place");
    }
  }
}

TEST(ElementwiseCuda, AddReluMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const int64_t n : kSizes) {
    const std::vector<float> a = random_floats(n, 9), b = random_floats(n, 10),
                             dy = random_floats(n, 11);
    std::vector<float> y_cpu(n), dx_cpu(n);
    add_relu_cpu<float>(n, a.data(), b.data(), y_cpu.data());
    add_relu_backward_cpu<float>(n, y_cpu.data(), dy.data(), dx_cpu.data());

    DeviceBuffer d_a(n), d_b(n), d_dy(n), d_y(n), d_dx(n);
    d_a.upload(a);
    d_b.upload(b);
    d_dy.upload(dy);
    d_y.poison();
    d_dx.poison();
    add_relu_cuda(nullptr, n, d_a.get(), d_b.get(), d_y.get());
    add_relu_backward_cuda(nullptr, n, d_y.get(), d_dy.get(), d_dx.get());
    expect_bitwise_equal(d_y.download(), y_cpu, "add_relu");
    expect_bitwise_equal(d_dx.download(), dx_cpu, "add_relu_backward");

    add_relu_cuda(nullptr, n, d_a.get(), d_b.get(), d_a.get());  // in place
    expect_bitwise_equal(d_a.download(), y_cpu, "add_relu in place");
  }
}

// Every op through its scalar kernel: pointers 4 bytes past a 16-byte boundary (and mixed: one
// aligned, one not). The results equal the CPU's exactly as on the float4 path (gelu and axpy
// within the bounds above).
TEST(ElementwiseCuda, MisalignedPointersUseScalarPathWithSameResults) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const float alpha = 1.25f;
  for (const int64_t n : kSizes) {
    const std::vector<float> a = random_floats(n, 12), b = random_floats(n, 13);
    // Device buffers of n + 1 floats; element 0 is skipped so the operands are misaligned.
    DeviceBuffer d_a(n + 1), d_b(n + 1), d_y(n + 1), d_aligned(n);
    std::vector<float> a1(n + 1, 0.0f), b1(n + 1, 0.0f);
    std::copy(a.begin(), a.end(), a1.begin() + 1);
    std::copy(b.begin(), b.end(), b1.begin() + 1);
    d_a.upload(a1);
    d_b.upload(b1);
    d_aligned.upload(b);
    float* pa = d_a.get() + 1;
    float* pb = d_b.get() + 1;
    float* py = d_y.get() + 1;
    auto result = [&]() {
      std::vector<float> all = d_y.download();
      return std::vector<float>(all.begin() + 1, all.end());
    };
    std::vector<float> cpu(n);

    relu_forward_cpu<float>(n, a.data(), cpu.data());
    d_y.poison();
    relu_forward_cuda(nullptr, n, pa, py);
    expect_bitwise_equal(result(), cpu, "relu misaligned");

    relu_backward_cpu<float>(n, a.data(), b.data(), cpu.data());
    d_y.poison();
    relu_backward_cuda(nullptr, n, pa, pb, py);
    expect_bitwise_equal(result(), cpu, "relu_backward misaligned");

    gelu_forward_cpu<float>(n, a.data(), cpu.data());
    d_y.poison();
    gelu_forward_cuda(nullptr, n, pa, py);
    expect_close(result(), cpu, 1e-6, 4e-6, "gelu misaligned");

    gelu_backward_cpu<float>(n, a.data(), b.data(), cpu.data());
    d_y.poison();
    gelu_backward_cuda(nullptr, n, pa, pb, py);
    expect_close(result(), cpu, 1e-6, 4e-6, "gelu_backward misaligned");

    add_cpu<float>(n, a.data(), b.data(), cpu.data());
    d_y.poison();
    add_cuda(nullptr, n, pa, d_aligned.get(), py);  // one operand aligned, one not
    expect_bitwise_equal(result(), cpu, "add mixed alignment");

    add_relu_cpu<float>(n, a.data(), b.data(), cpu.data());
    d_y.poison();
    add_relu_cuda(nullptr, n, pa, pb, py);
    expect_bitwise_equal(result(), cpu, "add_relu misaligned");

    add_relu_backward_cpu<float>(n, a.data(), b.data(), cpu.data());
    d_y.poison();
    add_relu_backward_cuda(nullptr, n, pa, pb, py);
    expect_bitwise_equal(result(), cpu, "add_relu_backward misaligned");

    scale_cpu<float>(n, alpha, a.data(), cpu.data());
    d_y.poison();
    scale_cuda(nullptr, n, alpha, pa, py);
    expect_bitwise_equal(result(), cpu, "scale misaligned");

    fill_cpu<float>(n, alpha, cpu.data());
    d_y.poison();
    fill_cuda(nullptr, n, alpha, py);
    expect_bitwise_equal(result(), cpu, "fill misaligned");

    // axpy accumulates into y = b (misaligned); bound as in AddScaleAxpyFillMatchCpu.
    std::vector<float> axpy_cpu_out = b;
    axpy_cpu<float>(n, alpha, a.data(), axpy_cpu_out.data());
    axpy_cuda(nullptr, n, alpha, pa, pb);
    const std::vector<float> all = d_b.download();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double bound = 2 * 1.1920929e-7 * (std::abs(alpha * a[i]) + std::abs(b[i]));
      if (!(std::abs(all[i + 1] - axpy_cpu_out[i]) <= bound) && ++mismatches <= 5) {
        ADD_FAILURE() << "axpy misaligned n=" << n << " i=" << i;
      }
    }
    EXPECT_EQ(mismatches, 0) << "axpy misaligned n=" << n;
  }
}

}  // namespace
}  // namespace pb::kernels
