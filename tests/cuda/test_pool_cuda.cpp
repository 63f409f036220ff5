// CUDA pooling against the CPU kernels (kernels/cpu/pool.cpp) on random inputs. Outputs are
// poisoned before each launch (NaN for floats, 0x7F7F7F7F, an impossible index, for argmax).
//
// Shapes: the ResNet stem (3x3, stride 2, pad 1 on 112x112), non-overlapping 2x2 on odd planes,
// heavily overlapping 3x3 stride 1, asymmetric windows/strides/pads, windows made only of padding
// (y = -inf, argmax = -1), more than 65535 planes (the grid's y-stride).
// Inputs are drawn from {0, 1, 2, 3} plus a few NaNs for max pooling, so that windows hold ties
// (the first max in row-major order must win) and NaNs (the first NaN wins).
//
// Tolerances: max/avg forward and backward are bitwise (the same float operations in the same
// order; the backward gathers in the CPU's scatter order). Global average forward: the CUDA
// kernel sums in double, so it is compared with the CPU kernel run in double on the same values
// (rtol 1e-6: both round one double result to float); its backward is bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/pool.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

// A device array of n elements of T, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }

  T* get() { return ptr_; }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(static_cast<int64_t>(host.size()), n_);
    PB_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison(int byte) { PB_CUDA_CHECK(cudaMemset(ptr_, byte, bytes())); }
  std::vector<T> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> host(static_cast<size_t>(n_));
    PB_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t bytes() const { return static_cast<size_t>(n_ > 0 ? n_ : 1) * sizeof(T); }
  int64_t n_;
  T* ptr_ = nullptr;
};

constexpr int kNanByte = 0xFF;       // every float a quiet NaN
constexpr int kBadIndexByte = 0x7F;  // every int32 0x7F7F7F7F

template <typename T>
void expect_bitwise_equal(const std::vector<T>& gpu, const std::vector<T>& cpu,
                          const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(T)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << gpu[i] << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

// Values in {0, 1, 2, 3} (many ties) with about one NaN in 500.
std::vector<float> tie_heavy_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> level(0, 3), nan_draw(0, 499);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) {
    e = nan_draw(rng) == 0 ? std::numeric_limits<float>::quiet_NaN()
                           : static_cast<float>(level(rng));
  }
  return v;
}

std::string name_of(const Pool2dShape& s) {
  return "N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " " + std::to_string(s.H) +
         "x" + std::to_string(s.W) + " k=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
         " s=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
         " p=" + std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w);
}

const std::vector<Pool2dShape> kShapes = {
    {2, 3, 112, 112, 3, 3, 2, 2, 1, 1},  // ResNet stem max pool
    {2, 5, 7, 9, 2, 2, 2, 2, 0, 0},      // non-overlapping, odd plane (last row/col unused)
    {1, 4, 13, 13, 3, 3, 1, 1, 1, 1},    // every cell in up to 9 windows
    {3, 2, 10, 11, 5, 3, 2, 1, 2, 1},    // asymmetric
    {1, 2, 4, 4, 2, 2, 3, 3, 2, 2},      // some windows are all padding
    {70000, 1, 4, 4, 2, 2, 2, 2, 0, 0},  // more planes than grid.y allows
};

TEST(PoolCuda, MaxPoolMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Pool2dShape& s : kShapes) {
    const std::string what = name_of(s);
    const int64_t nx = s.N * s.C * s.H * s.W, ny = s.N * s.C * s.P() * s.Q();
    const std::vector<float> x = tie_heavy_floats(nx, 1);
    const std::vector<float> dy = random_floats(ny, 2, -1.0f, 1.0f);
    std::vector<float> y(ny), dx(nx);
    std::vector<int32_t> argmax(ny);
    max_pool2d_forward_cpu<float>(s, x.data(), y.data(), argmax.data());
    max_pool2d_backward_cpu<float>(s, dy.data(), argmax.data(), dx.data());

    DeviceArray<float> d_x(nx), d_y(ny), d_dy(ny), d_dx(nx);
    DeviceArray<int32_t> d_argmax(ny);
    d_x.upload(x);
    d_dy.upload(dy);
    d_y.poison(kNanByte);
    d_argmax.poison(kBadIndexByte);
    max_pool2d_forward_cuda(nullptr, s, d_x.get(), d_y.get(), d_argmax.get());
    expect_bitwise_equal(d_y.download(), y, what + " max y");
    expect_bitwise_equal(d_argmax.download(), argmax, what + " argmax");

    d_y.poison(kNanByte);
    max_pool2d_forward_cuda(nullptr, s, d_x.get(), d_y.get(), nullptr);  // argmax optional
    expect_bitwise_equal(d_y.download(), y, what + " max y without argmax");

    d_argmax.upload(argmax);
    d_dx.poison(kNanByte);
    max_pool2d_backward_cuda(nullptr, s, d_dy.get(), d_argmax.get(), d_dx.get());
    expect_bitwise_equal(d_dx.download(), dx, what + " max dx");
  }
}

TEST(PoolCuda, AvgPoolMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Pool2dShape& s : kShapes) {
    const std::string what = name_of(s);
    const int64_t nx = s.N * s.C * s.H * s.W, ny = s.N * s.C * s.P() * s.Q();
    const std::vector<float> x = random_floats(nx, 3, -2.0f, 2.0f);
    const std::vector<float> dy = random_floats(ny, 4, -1.0f, 1.0f);
    std::vector<float> y(ny), dx(nx);
    avg_pool2d_forward_cpu<float>(s, x.data(), y.data());
    avg_pool2d_backward_cpu<float>(s, dy.data(), dx.data());

    DeviceArray<float> d_x(nx), d_y(ny), d_dy(ny), d_dx(nx);
    d_x.upload(x);
    d_dy.upload(dy);
    d_y.poison(kNanByte);
    d_dx.poison(kNanByte);
    avg_pool2d_forward_cuda(nullptr, s, d_x.get(), d_y.get());
    avg_pool2d_backward_cuda(nullptr, s, d_dy.get(), d_dx.get());
    expect_bitwise_equal(d_y.download(), y, what + " avg y");
    expect_bitwise_equal(d_dx.download(), dx, what + " avg dx");
  }
}

TEST(PoolCuda, GlobalAvgPoolMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  struct Case {
    int64_t N, C, L;
  };
  for (const Case k :
       {Case{8, 64, 49}, Case{3, 5, 1}, Case{2, 3, 3136}, Case{1, 1, 33}, Case{4, 3001, 7}}) {
    const std::string what =
        "N=" + std::to_string(k.N) + " C=" + std::to_string(k.C) + " L=" + std::to_string(k.L);
    const int64_t nx = k.N * k.C * k.L, ny = k.N * k.C;
    const std::vector<float> x = random_floats(nx, 5, -1.0f, 3.0f);
    const std::vector<float> dy = random_floats(ny, 6, -1.0f, 1.0f);
    // Reference for the forward: the CPU kernel in double on the same values.
    const std::vector<double> xd(x.begin(), x.end());
    std::vector<double> yd(ny);
    global_avg_pool_forward_cpu<double>(k.N, k.C, k.L, xd.data(), yd.data());
    std::vector<float> dx(nx);
    global_avg_pool_backward_cpu<float>(k.N, k.C, k.L, dy.data(), dx.data());

    DeviceArray<float> d_x(nx), d_y(ny), d_dy(ny), d_dx(nx);
    d_x.upload(x);
    d_dy.upload(dy);
    d_y.poison(kNanByte);
    d_dx.poison(kNanByte);
    global_avg_pool_forward_cuda(nullptr, k.N, k.C, k.L, d_x.get(), d_y.get());
    global_avg_pool_backward_cuda(nullptr, k.N, k.C, k.L, d_dy.get(), d_dx.get());
    const std::vector<float> y = d_y.download();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < ny; ++i) {
      if (!(std::abs(y[i] - yd[i]) <= 1e-6 * std::abs(yd[i]) + 1e-9) && ++mismatches <= 5) {
        ADD_FAILURE() << what << " i=" << i << ": cuda " << y[i] << " vs double " << yd[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << what;
    expect_bitwise_equal(d_dx.download(), dx, what + " global dx");
  }
}

// Invalid shapes throw before any launch, as on the CPU; empty batches launch nothing.
TEST(PoolCuda, ShapeErrorsAndEmptyBatches) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const Pool2dShape too_big{1, 1, 2, 2, 3, 3, 1, 1, 0, 0};
  EXPECT_THROW(max_pool2d_forward_cuda(nullptr, too_big, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(avg_pool2d_backward_cuda(nullptr, too_big, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(global_avg_pool_forward_cuda(nullptr, 1, 1, 0, nullptr, nullptr),
               std::invalid_argument);
  const Pool2dShape empty{0, 3, 4, 4, 2, 2, 2, 2, 0, 0};
  max_pool2d_forward_cuda(nullptr, empty, nullptr, nullptr, nullptr);
  max_pool2d_backward_cuda(nullptr, empty, nullptr, nullptr, nullptr);
  avg_pool2d_forward_cuda(nullptr, empty, nullptr, nullptr);
  avg_pool2d_backward_cuda(nullptr, empty, nullptr, nullptr);
  global_avg_pool_forward_cuda(nullptr, 0, 3, 5, nullptr, nullptr);
  global_avg_pool_backward_cuda(nullptr, 0, 3, 5, nullptr, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace pb::kernels
