// conv2d_{forward,backward_data,backward_weight}_cuda against the CPU kernels on fresh random
// inputs (uniform in [-1, 1), never zeros): ResNet-like layers (3x3 pad 1, 1x1, 1x1 stride 2,
// 3x3 stride 2, the 7x7 stride-2 pad-3 stem) at small batch, and odd shapes: channel counts that
// are not multiples of 8, rectangular filters, unequal strides, stride larger than the filter
// (input pixels no tap reaches), padding almost as large as the filter, N = 0.
//
// Every check measures ||out - ref|| / ||ref|| (Frobenius) against conv2d_*_cpu<double> on the
// same float inputs, and reports the CPU float kernel's error beside it. Bound: 1e-5 for all
// three passes and dbias. FP32 accumulation of L random terms errs by about eps * sqrt(L)
// (eps = 6e-8): forward reduces over C*R*S <= 1152 here, backward-data over K*R*S <= 1152,
// backward-weight over N*P*Q <= 8192 but in split-K chunks of a few hundred, so the worst
// expected error is a few 1e-6.
//
// Every output (and the backward-weight workspace) is poisoned with NaN before the call, so an
// unwritten element fails. Backward-weight is run twice and must agree bit for bit (its split-K
// reduction is deterministic).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cuda/check.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

constexpr double kRelTol = 1e-5;

// A float device buffer, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  float* get() { return ptr_; }
  size_t bytes() const { return (n_ > 0 ? n_ : 1) * sizeof(float); }
  void upload(const std::vector<float>& host) {
    PB_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice));
  }
  void poison() { PB_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes())); }  // every float a NaN
  std::vector<float> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> host(n_);
    PB_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t n_;
  float* ptr_ = nullptr;
};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||out - ref|| / ||ref||; NaN (never passes) if any element of out is NaN.
template <typename T>
double rel_error(const std::vector<T>& out, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

struct ConvCase {
  const char* name;
  Conv2dShape s;
};

Conv2dShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                  int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  Conv2dShape s{N, C, H, W, K, R, S};
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  return s;
}

std::string describe(const ConvCase& c) {
  const Conv2dShape& s = c.s;
  return std::string(c.name) + " (N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) +
         " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) + " K=" + std::to_string(s.K) +
         " R=" + std::to_string(s.R) + " S=" + std::to_string(s.S) +
         " stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
         " pad=" + std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w) + ")";
}

const std::vector<ConvCase> kCases = {
    // ResNet-like (channel counts multiples of 8)
    {"3x3 pad 1, 64->64", shape(2, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1)},
    {"3x3 pad 1, 128->128 (128-row tiles)", shape(2, 128, 8, 8, 128, 3, 3, 1, 1, 1, 1)},
    {"3x3 stride 2 pad 1, 32->48, odd input", shape(2, 32, 15, 15, 48, 3, 3, 2, 2, 1, 1)},
    {"1x1, 40->200", shape(4, 40, 7, 7, 200, 1, 1, 1, 1, 0, 0)},
    {"1x1 stride 2, 16->32", shape(2, 16, 14, 14, 32, 1, 1, 2, 2, 0, 0)},
    {"7x7 stride 2 pad 3 stem, 3->64", shape(2, 3, 32, 32, 64, 7, 7, 2, 2, 3, 3)},
    {"3x3 pad 1, 16->16, N*P*Q = 8192 (many splits)", shape(8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1)},
    // odd shapes
    {"odd: 3x2 filter, stride (2,1), pad (1,0)", shape(3, 5, 7, 9, 6, 3, 2, 2, 1, 1, 0)},
    {"odd: 5x5 pad 2, 9->20", shape(2, 9, 11, 6, 20, 5, 5, 1, 1, 2, 2)},
    {"odd: 2x2 stride 3 pad 1 (stride > filter)", shape(2, 4, 10, 11, 5, 2, 2, 3, 3, 1, 1)},
    {"odd: 5x5 pad 4 on a 4x4 input", shape(1, 3, 4, 4, 2, 5, 5, 1, 1, 4, 4)},
    {"odd: 1x1 everything", shape(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0)},
    {"odd: 1x3 filter, stride (1,2), 70->130", shape(2, 70, 5, 12, 130, 1, 3, 1, 2, 0, 1)},
};

TEST(Conv2dCuda, AllPassesMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 1000;
  for (const ConvCase& c : kCases) {
    const Conv2dShape& s = c.s;
    const std::string what = describe(c);
    const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S,
                 ny = s.N * s.K * s.P() * s.Q();
    const std::vector<float> x = random_floats(nx, ++seed), w = random_floats(nw, ++seed),
                             bias = random_floats(s.K, ++seed), dy = random_floats(ny, ++seed);
    const std::vector<double> xd = to_double(x), wd = to_double(w), bd = to_double(bias),
                              dyd = to_double(dy);

    // References: double, and the CPU float kernels for context.
    std::vector<double> y_ref(ny), dx_ref(nx), dw_ref(nw), db_ref(s.K);
    conv2d_forward_cpu<double>(s, xd.data(), wd.data(), bd.data(), y_ref.data());
    conv2d_backward_data_cpu<double>(s, dyd.data(), wd.data(), dx_ref.data());
    conv2d_backward_weight_cpu<double>(s, xd.data(), dyd.data(), dw_ref.data(), db_ref.data());
    std::vector<float> y_cpu(ny), dx_cpu(nx), dw_cpu(nw), db_cpu(s.K);
    conv2d_forward_cpu<float>(s, x.data(), w.data(), bias.data(), y_cpu.data());
    conv2d_backward_data_cpu<float>(s, dy.data(), w.data(), dx_cpu.data());
    conv2d_backward_weight_cpu<float>(s, x.data(), dy.data(), dw_cpu.data(), db_cpu.data());

    DeviceBuffer d_x(nx), d_w(nw), d_b(s.K), d_dy(ny), d_y(ny), d_dx(nx), d_dw(nw), d_db(s.K);
    const int64_t ws_bytes = conv2d_backward_weight_cuda_workspace_bytes(s);
    ASSERT_GE(ws_bytes, 0) << what;
    DeviceBuffer d_ws(static_cast<size_t>(ws_bytes) / sizeof(float));
    d_x.upload(x);
    d_w.upload(w);
    d_b.upload(bias);
    d_dy.upload(dy);

    d_y.poison();
    conv2d_forward_cuda(nullptr, s, d_x.get(), d_w.get(), d_b.get(), d_y.get());
    PB_CUDA_CHECK(cudaGetLastError());
    EXPECT_LE(rel_error(d_y.download(), y_ref), kRelTol)
        << what << " forward (cpu float: " << rel_error(y_cpu, y_ref) << ")";

    d_dx.poison();
    conv2d_backward_data_cuda(nullptr, s, d_dy.get(), d_w.get(), d_dx.get());
    PB_CUDA_CHECK(cudaGetLastError());
    EXPECT_LE(rel_error(d_dx.download(), dx_ref), kRelTol)
        << what << " backward-data (cpu float: " << rel_error(dx_cpu, dx_ref) << ")";

    d_dw.poison();
    d_db.poison();
    d_ws.poison();
    conv2d_backward_weight_cuda(nullptr, s, d_x.get(), d_dy.get(), d_dw.get(), d_db.get(),
                                ws_bytes > 0 ? d_ws.get() : nullptr);
    PB_CUDA_CHECK(cudaGetLastError());
    const std::vector<float> dw_gpu = d_dw.download();
    EXPECT_LE(rel_error(dw_gpu, dw_ref), kRelTol)
        << what << " backward-weight (cpu float: " << rel_error(dw_cpu, dw_ref) << ")";
    EXPECT_LE(rel_error(d_db.download(), db_ref), kRelTol)
        << what << " dbias (cpu float: " << rel_error(db_cpu, db_ref) << ")";

    // Deterministic: a second run (workspace poisoned again) gives the same bits.
    d_dw.poison();
    d_ws.poison();
    conv2d_backward_weight_cuda(nullptr, s, d_x.get(), d_dy.get(), d_dw.get(), nullptr,
                                ws_bytes > 0 ? d_ws.get() : nullptr);
    const std::vector<float> dw_again = d_dw.download();
    EXPECT_EQ(std::memcmp(dw_gpu.data(), dw_again.data(), nw * sizeof(float)), 0)
        << what << " backward-weight is not deterministic";
  }
}

TEST(Conv2dCuda, ForwardWithoutBias) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const Conv2dShape s = shape(2, 12, 9, 10, 20, 3, 3, 1, 1, 1, 1);
  const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S,
               ny = s.N * s.K * s.P() * s.Q();
  const std::vector<float> x = random_floats(nx, 1), w = random_floats(nw, 2);
  std::vector<double> y_ref(ny);
  conv2d_forward_cpu<double>(s, to_double(x).data(), to_double(w).data(), nullptr, y_ref.data());
  DeviceBuffer d_x(nx), d_w(nw), d_y(ny);
  d_x.upload(x);
  d_w.upload(w);
  d_y.poison();
  conv2d_forward_cuda(nullptr, s, d_x.get(), d_w.get(), nullptr, d_y.get());
  EXPECT_LE(rel_error(d_y.download(), y_ref), kRelTol);
}

// N == 0: forward and backward-data have nothing to write; dw and dbias are zeros.
TEST(Conv2dCuda, EmptyBatch) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const Conv2dShape s = shape(0, 4, 6, 6, 3, 3, 3, 1, 1, 1, 1);
  const size_t nw = s.K * s.C * s.R * s.S;
  DeviceBuffer d_w(nw), d_dw(nw), d_db(s.K), d_any(1);
  conv2d_forward_cuda(nullptr, s, d_any.get(), d_w.get(), nullptr, d_any.get());
  conv2d_backward_data_cuda(nullptr, s, d_any.get(), d_w.get(), d_any.get());
  ASSERT_EQ(conv2d_backward_weight_cuda_workspace_bytes(s), 0);
  d_dw.poison();
  d_db.poison();
  conv2d_backward_weight_cuda(nullptr, s, d_any.get(), d_any.get(), d_dw.get(), d_db.get(),
                              nullptr);
  for (const float v : d_dw.download()) ASSERT_EQ(v, 0.0f);
  for (const float v : d_db.download()) ASSERT_EQ(v, 0.0f);
}

TEST(Conv2dCuda, ShapeErrors) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  Conv2dShape bad = shape(1, 3, 4, 4, 2, 7, 7, 1, 1, 1, 1);  // filter larger than padded input
  EXPECT_THROW(conv2d_forward_cuda(nullptr, bad, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  bad = shape(1, 3, 4, 4, 2, 3, 3, 0, 1, 1, 1);  // stride 0
  EXPECT_THROW(conv2d_backward_data_cuda(nullptr, bad, nullptr, nullptr, nullptr),
               std::invalid_argument);
  // A split backward-weight without its workspace is refused, not run.
  const Conv2dShape split = shape(8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1);
  ASSERT_GT(conv2d_backward_weight_cuda_workspace_bytes(split), 0);
  EXPECT_THROW(
      conv2d_backward_weight_cuda(nullptr, split, nullptr, nullptr, nullptr, nullptr, nullptr),
      std::invalid_argument);
}

}  // namespace
}  // namespace pb::kernels
