// CUDA reductions (kernels/cuda/reduce.cu) against the CPU kernels (kernels/cpu/reduce.cpp):
// sum and mean of odd and large sizes, aligned and misaligned; the global L2 norm of a
// ResNet-50-sized parameter list, of many tiny tensors (several scan tiles), of zero-sized and
// misaligned tensors; bitwise reproducibility. The result scalar is poisoned with NaN first.
//
// Tolerance: |cuda - cpu| <= 1e-6 |cpu| + 1e-6. Both accumulate in double (the CPU in index
// order, CUDA in a fixed tree), so the double results agree to ~1e-15 relative and the float
// results differ by at most 1 ulp (1.2e-7 relative).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

// Raw device allocation of `bytes`, freed on scope exit.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1)); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  ~DeviceBytes() { cudaFree(ptr_); }
  template <typename T>
  T* as() {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

float download_scalar(const float* d) {
  PB_CUDA_CHECK(cudaDeviceSynchronize());
  float h = 0.0f;
  PB_CUDA_CHECK(cudaMemcpy(&h, d, sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

void expect_close(float gpu, float cpu, const std::string& what) {
  EXPECT_TRUE(std::abs(static_cast<double>(gpu) - cpu) <= 1e-6 * std::abs(cpu) + 1e-6)
      << what << ": cuda " << gpu << " vs cpu " << cpu;
}

TEST(ReduceCuda, SumAndMeanMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBytes ws(reduce_cuda_workspace_bytes()), out(sizeof(float));
  for (const int64_t n :
       {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{1000}, int64_t{65539}, int64_t{10000001}}) {
    for (const int64_t offset : {int64_t{0}, int64_t{1}}) {  // 1: misaligned, scalar path
      const std::string what = "n=" + std::to_string(n) + " offset=" + std::to_string(offset);
      // A positive mean so that the sum is not dominated by cancellation.
      const std::vector<float> x = random_floats(n, 1, -1.0f, 1.5f);
      float sum = 0.0f, mean = 0.0f;
      sum_cpu<float>(n, x.data(), &sum);
      mean_cpu<float>(n, x.data(), &mean);

      DeviceBytes d_x((n + offset) * sizeof(float));
      float* px = d_x.as<float>() + offset;
      PB_CUDA_CHECK(cudaMemcpy(px, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
      PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
      sum_cuda(nullptr, n, px, out.as<float>(), ws.as<void>());
      expect_close(download_scalar(out.as<float>()), sum, what + " sum");
      PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
      mean_cuda(nullptr, n, px, out.as<float>(), ws.as<void>());
      expect_close(download_scalar(out.as<float>()), mean, what + " mean");
    }
  }
  PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
  sum_cuda(nullptr, 0, nullptr, out.as<float>(), ws.as<void>());
  EXPECT_EQ(download_scalar(out.as<float>()), 0.0f);
  PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
  mean_cuda(nullptr, 0, nullptr, out.as<float>(), ws.as<void>());
  EXPECT_EQ(download_scalar(out.as<float>()), 0.0f);
}

// The element counts of ResNet-50's 161 parameter tensors (25.6M in all): per bottleneck block
// three convs and three batch norms (gamma, beta), a projection conv + BN in the first block of
// each stage; the stem conv + BN; the fc weight and bias.
std::vector<int64_t> resnet50_sizes() {
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

// Lays the tensors out in one device buffer (offset floats apart, so some start misaligned),
// fills them with random values, and compares the CUDA norm with the CPU one; returns the CUDA
// result's bits for the reproducibility check.
uint32_t check_l2_norm(const std::vector<int64_t>& sizes, int64_t gap, uint32_t seed,
                       const std::string& what) {
  const int count = static_cast<int>(sizes.size());
  std::vector<int64_t> starts(sizes.size());
  int64_t total = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    starts[t] = total;
    total += sizes[t] + gap;
  }
  const std::vector<float> data = random_floats(total, seed, -0.1f, 0.1f);
  std::vector<const float*> host_ptrs(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) host_ptrs[t] = data.data() + starts[t];
  float expected = 0.0f;
  global_l2_norm_cpu<float>(count, host_ptrs.data(), sizes.data(), &expected);

  DeviceBytes d_data(total * sizeof(float)), d_ptrs(sizes.size() * sizeof(float*)),
      d_sizes(sizes.size() * sizeof(int64_t)), ws(reduce_cuda_workspace_bytes()),
      out(sizeof(float));
  PB_CUDA_CHECK(
      cudaMemcpy(d_data.as<float>(), data.data(), total * sizeof(float), cudaMemcpyHostToDevice));
  std::vector<const float*> dev_ptrs(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) dev_ptrs[t] = d_data.as<float>() + starts[t];
  PB_CUDA_CHECK(cudaMemcpy(d_ptrs.as<void>(), dev_ptrs.data(), sizes.size() * sizeof(float*),
                           cudaMemcpyHostToDevice));
  PB_CUDA_CHECK(cudaMemcpy(d_sizes.as<void>(), sizes.data(), sizes.size() * sizeof(int64_t),
                           cudaMemcpyHostToDevice));
  PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
  global_l2_norm_cuda(nullptr, count, d_ptrs.as<const float* const>(), d_sizes.as<int64_t>(),
                      out.as<float>(), ws.as<void>());
  const float got = download_scalar(out.as<float>());
  expect_close(got, expected, what);
  uint32_t bits = 0;
  std::memcpy(&bits, &got, sizeof(bits));
  return bits;
}

TEST(ReduceCuda, GlobalL2NormMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<int64_t> resnet = resnet50_sizes();
  ASSERT_EQ(resnet.size(), 161u);
  check_l2_norm(resnet, 0, 1, "resnet50 aligned");
  check_l2_norm(resnet, 3, 2, "resnet50 gap 3 (misaligned starts)");

  // Many tiny tensors (sizes 0..9): several 256-entry scan tiles, ranges spanning many tensors.
  std::vector<int64_t> tiny(3001);
  for (size_t t = 0; t < tiny.size(); ++t) tiny[t] = static_cast<int64_t>((t * 7) % 10);
  check_l2_norm(tiny, 1, 3, "3001 tiny tensors");

  check_l2_norm({1}, 0, 4, "one element");
  check_l2_norm({0, 0, 5, 0}, 2, 5, "zero-sized tensors");
  check_l2_norm({3, 10000019, 2}, 1, 6, "one big odd tensor");
  check_l2_norm({0}, 0, 7, "only an empty tensor");  // norm 0
}

TEST(ReduceCuda, GlobalL2NormIsReproducible) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<int64_t> resnet = resnet50_sizes();
  const uint32_t first = check_l2_norm(resnet, 1, 8, "run 0");
  for (int run = 1; run < 3; ++run) {
    EXPECT_EQ(check_l2_norm(resnet, 1, 8, "run " + std::to_string(run)), first);
  }
}

TEST(ReduceCuda, EmptyListGivesZero) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBytes ws(reduce_cuda_workspace_bytes()), out(sizeof(float));
  PB_CUDA_CHECK(cudaMemset(out.as<float>(), 0xFF, sizeof(float)));
  global_l2_norm_cuda(nullptr, 0, nullptr, nullptr, out.as<float>(), ws.as<void>());
  EXPECT_EQ(download_scalar(out.as<float>()), 0.0f);
}

}  // namespace
}  // namespace pb::kernels
