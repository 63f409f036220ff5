// conv2d CPU kernels: hand-computed cases, then forward, backward-data and backward-weight against
// a naive direct convolution written here in double, on shapes that hit every branch of im2col
// (padding, strides, non-square and oversized filters, the 1x1 fast path), and the adjoint identity
// <conv(x), dy> == <x, bwd_data(dy)> == <w, bwd_weight(x, dy)>. Then the direct AVX2 path
// (kernels/cpu/conv2d_direct.cpp) on its own: against the oracle on shapes that hit its edges
// (channel counts that are not multiples of its 4-channel tiles, images smaller than its 24-wide
// tiles, partial last chunks, 1x1 to 7x7 filters), bitwise the same for 1, 2 and 3 threads, and
// chosen by conv2d_*_cpu<float> exactly when it applies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cpu/conv2d_algos.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace pb::kernels {
namespace {

// ---- hand-computed ------------------------------------------------------------------------------

// x (1,1,3,3) = [1 2 3; 4 5 6; 7 8 9], w (1,1,2,2) = [1 2; 3 4], stride 1, pad 0 -> y (1,1,2,2):
//   y00 = 1*1 + 2*2 + 3*4 + 4*5 = 37      y01 = 1*2 + 2*3 + 3*5 + 4*6 = 47
//   y10 = 1*4 + 2*5 + 3*7 + 4*8 = 67      y11 = 1*5 + 2*6 + 3*8 + 4*9 = 77
// With bias 10 every output grows by 10.
// Backward with dy = all ones:
//   dx(h,w) = sum of the filter taps that cover (h,w) = [1 3 2; 4 10 6; 3 7 4]
//   dw(r,s) = sum of the 2x2 window of x at offset (r,s): [1+2+4+5 2+3+5+6; 4+5+7+8 5+6+8+9]
//           = [12 16; 24 28];   dbias = 4 (four outputs)
template <typename T>
void check_tiny_hand_computed() {
  const Conv2dShape s{.N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .R = 2, .S = 2};
  ASSERT_EQ(s.P(), 2);
  ASSERT_EQ(s.Q(), 2);
  const T x[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const T w[] = {1, 2, 3, 4};
  const T bias[] = {10};
  T y[4];
  conv2d_forward_cpu<T>(s, x, w, nullptr, y);
  EXPECT_EQ(y[0], T(37));
  EXPECT_EQ(y[1], T(47));
  EXPECT_EQ(y[2], T(67));
  EXPECT_EQ(y[3], T(77));
  conv2d_forward_cpu<T>(s, x, w, bias, y);
  EXPECT_EQ(y[0], T(47));
  EXPECT_EQ(y[3], T(87));

  const T dy[] = {1, 1, 1, 1};
  T dx[9];
  conv2d_backward_data_cpu<T>(s, dy, w, dx);
  const T dx_expected[] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(dx[i], dx_expected[i]) << "dx[" << i << "]";

  T dw[4], dbias[1];
  conv2d_backward_weight_cpu<T>(s, x, dy, dw, dbias);
  EXPECT_EQ(dw[0], T(12));
  EXPECT_EQ(dw[1], T(16));
  EXPECT_EQ(dw[2], T(24));
  EXPECT_EQ(dw[3], T(28));
  EXPECT_EQ(dbias[0], T(4));
}

TEST(Conv2dCpu, TinyHandComputedFloat) {
  check_tiny_hand_computed<float>();
}
TEST(Conv2dCpu, TinyHandComputedDouble) {
  check_tiny_hand_computed<double>();
}

// x (1,1,4,4) = 1..16 row-major, 3x3 filters, stride 2, pad 1 -> P = Q = (4 + 2 - 3) / 2 + 1 = 2.
// Window (p,q) covers rows 2p-1..2p+1 and columns 2q-1..2q+1 (row/column -1 is padding).
//   x =  1  2  3  4
//        5  6  7  8
//        9 10 11 12
//       13 14 15 16
// Filter 0 is all ones (window sums):
//   y00 = 1+2+5+6 = 14   y01 = 2+3+4+6+7+8 = 30
//   y10 = 5+6+9+10+13+14 = 57   y11 = 6+7+8+10+11+12+14+15+16 = 99
// Filter 1 has only its top-left tap set, which reads x(2p-1, 2q-1): padding except at (1,1):
//   y = [0 0; 0 x(1,1)] = [0 0; 0 6]
// Backward-data with dy = 1 for filter 0 and 0 for filter 1: dx(h,w) counts the windows covering
// (h,w); rows are covered by windows {p=0}, {p=0,1}, {p=1}, {p=1} -> counts 1 2 1 1, likewise
// columns, so dx = outer([1 2 1 1], [1 2 1 1]).
template <typename T>
void check_padded_strided_hand_computed() {
  const Conv2dShape s{.N = 1,
                      .C = 1,
                      .H = 4,
                      .W = 4,
                      .K = 2,
                      .R = 3,
                      .S = 3,
                      .stride_h = 2,
                      .stride_w = 2,
                      .pad_h = 1,
                      .pad_w = 1};
  ASSERT_EQ(s.P(), 2);
  ASSERT_EQ(s.Q(), 2);
  T x[16];
  for (int i = 0; i < 16; ++i) x[i] = T(i + 1);
  T w[18] = {};
  for (int i = 0; i < 9; ++i) w[i] = T(1);  // filter 0: all ones
  w[9] = T(1);                              // filter 1: top-left tap
  T y[8];
  conv2d_forward_cpu<T>(s, x, w, nullptr, y);
  const T y_expected[] = {14, 30, 57, 99, 0, 0, 0, 6};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], y_expected[i]) << "y[" << i << "]";

  const T dy[] = {1, 1, 1, 1, 0, 0, 0, 0};
  T dx[16];
  conv2d_backward_data_cpu<T>(s, dy, w, dx);
  const T count[] = {1, 2, 1, 1};
  for (int h = 0; h < 4; ++h) {
    for (int c = 0; c < 4; ++c) EXPECT_EQ(dx[h * 4 + c], count[h] * count[c]) << h << "," << c;
  }

  // Backward-weight, same dy: dw for filter 0 tap (r,s) sums x over the positions that tap reads
  // (padding reads 0); tap (0,0) reads only x(1,1) = 6 (from window (1,1)); tap (1,1) reads
  // x(0,0), x(0,2), x(2,0), x(2,2) = 1 + 3 + 9 + 11 = 24. Filter 1 gets dy = 0: all zeros.
  T dw[18], dbias[2];
  conv2d_backward_weight_cpu<T>(s, x, dy, dw, dbias);
  EXPECT_EQ(dw[0], T(6));
  EXPECT_EQ(dw[4], T(24));
  for (int i = 9; i < 18; ++i) EXPECT_EQ(dw[i], T(0)) << "dw[" << i << "]";
  EXPECT_EQ(dbias[0], T(4));
  EXPECT_EQ(dbias[1], T(0));
}

TEST(Conv2dCpu, PaddedStride2HandComputedFloat) {
  check_padded_strided_hand_computed<float>();
}
TEST(Conv2dCpu, PaddedStride2HandComputedDouble) {
  check_padded_strided_hand_computed<double>();
}

// ---- the naive oracle ---------------------------------------------------------------------------

// Each output element of the naive passes comes with its error scale, the sum of |terms| that
// formed it, so tolerances are relative to the size of the sum rather than its (possibly
// cancelled) result.
struct Naive {
  std::vector<double> value, scale;
  explicit Naive(int64_t n)
      : value(static_cast<size_t>(n), 0.0), scale(static_cast<size_t>(n), 0.0) {}
  void add(int64_t i, double term) {
    value[static_cast<size_t>(i)] += term;
    scale[static_cast<size_t>(i)] += std::fabs(term);
  }
};

// Calls f(n, k, p, q, c, h, w, r, s) for every (output, filter tap) pair whose input cell (h,w) is
// inside the image: the seven loops of a direct convolution.
template <typename F>
void for_each_tap(const Conv2dShape& s, F f) {
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P(); ++p)
        for (int64_t q = 0; q < s.Q(); ++q)
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t r = 0; r < s.R; ++r)
              for (int64_t t = 0; t < s.S; ++t) {
                const int64_t h = p * s.stride_h - s.pad_h + r, w = q * s.stride_w - s.pad_w + t;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W) f(n, k, p, q, c, h, w, r, t);
              }
}

int64_t x_index(const Conv2dShape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return ((n * s.C + c) * s.H + h) * s.W + w;
}
int64_t w_index(const Conv2dShape& s, int64_t k, int64_t c, int64_t r, int64_t t) {
  return ((k * s.C + c) * s.R + r) * s.S + t;
}
int64_t y_index(const Conv2dShape& s, int64_t n, int64_t k, int64_t p, int64_t q) {
  return ((n * s.K + k) * s.P() + p) * s.Q() + q;
}

template <typename T>
Naive naive_forward(const Conv2dShape& s, const std::vector<T>& x, const std::vector<T>& w,
                    const std::vector<T>& bias) {
  Naive y(s.N * s.K * s.P() * s.Q());
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t i = 0; i < s.P() * s.Q(); ++i) y.add((n * s.K + k) * s.P() * s.Q() + i, bias[k]);
  for_each_tap(s, [&](int64_t n, int64_t k, int64_t p, int64_t q, int64_t c, int64_t h, int64_t ww,
                      int64_t r, int64_t t) {
    y.add(y_index(s, n, k, p, q), double(w[w_index(s, k, c, r, t)]) * x[x_index(s, n, c, h, ww)]);
  });
  return y;
}

template <typename T>
Naive naive_backward_data(const Conv2dShape& s, const std::vector<T>& dy, const std::vector<T>& w) {
  Naive dx(s.N * s.C * s.H * s.W);
  for_each_tap(s, [&](int64_t n, int64_t k, int64_t p, int64_t q, int64_t c, int64_t h, int64_t ww,
                      int64_t r, int64_t t) {
    dx.add(x_index(s, n, c, h, ww), double(w[w_index(s, k, c, r, t)]) * dy[y_index(s, n, k, p, q)]);
  });
  return dx;
}

template <typename T>
Naive naive_backward_weight(const Conv2dShape& s, const std::vector<T>& x,
                            const std::vector<T>& dy) {
  Naive dw(s.K * s.C * s.R * s.S);
  for_each_tap(s, [&](int64_t n, int64_t k, int64_t p, int64_t q, int64_t c, int64_t h, int64_t ww,
                      int64_t r, int64_t t) {
    dw.add(w_index(s, k, c, r, t), double(x[x_index(s, n, c, h, ww)]) * dy[y_index(s, n, k, p, q)]);
  });
  return dw;
}

// ---- randomized comparisons ---------------------------------------------------------------------

struct Case {
  const char* name;
  Conv2dShape shape;
};

const Case kCases[] = {
    {"odd: 3x2 filter, stride (2,1), pad (1,0)",
     {.N = 2,
      .C = 3,
      .H = 7,
      .W = 5,
      .K = 4,
      .R = 3,
      .S = 2,
      .stride_h = 2,
      .stride_w = 1,
      .pad_h = 1,
      .pad_w = 0}},
    {"1x1 stride 2 (projection shortcut)",
     {.N = 2, .C = 4, .H = 6, .W = 5, .K = 3, .R = 1, .S = 1, .stride_h = 2, .stride_w = 2}},
    {"1x1 stride (2,1): not the fast path",
     {.N = 2, .C = 3, .H = 5, .W = 4, .K = 2, .R = 1, .S = 1, .stride_h = 2, .stride_w = 1}},
    {"padding wider than the input: some taps only ever read padding",
     {.N = 2, .C = 2, .H = 1, .W = 2, .K = 3, .R = 7, .S = 5, .pad_h = 3, .pad_w = 2}},
    {"1x1 stride 1 pad 0 (fast path)", {.N = 3, .C = 5, .H = 4, .W = 3, .K = 6, .R = 1, .S = 1}},
    {"1x1 pad 1 (not the fast path)",
     {.N = 1, .C = 2, .H = 3, .W = 4, .K = 2, .R = 1, .S = 1, .pad_h = 1, .pad_w = 1}},
    {"5x4 filter, stride (3,2), pad (2,3): filter larger than stride",
     {.N = 2,
      .C = 2,
      .H = 5,
      .W = 6,
      .K = 3,
      .R = 5,
      .S = 4,
      .stride_h = 3,
      .stride_w = 2,
      .pad_h = 2,
      .pad_w = 3}},
    {"filter covers the whole input", {.N = 2, .C = 3, .H = 3, .W = 4, .K = 2, .R = 3, .S = 4}},
    {"stride larger than filter",
     {.N = 1, .C = 2, .H = 9, .W = 8, .K = 2, .R = 2, .S = 2, .stride_h = 3, .stride_w = 4}},
    {"resnet-like 3x3 pad 1",
     {.N = 2, .C = 8, .H = 8, .W = 8, .K = 16, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
    // kernels/cpu/conv2d.cpp lowers 2^21 / max(C*R*S, K) / (P*Q) = 2^21 / (567 * 400) = 9 images
    // per GEMM here: a full chunk of 9 and a last chunk of 1, each image at its own column offset.
    {"several chunks: 10 images, 7x9 filter, stride 2, pad (3,4)",
     {.N = 10,
      .C = 9,
      .H = 40,
      .W = 40,
      .K = 5,
      .R = 7,
      .S = 9,
      .stride_h = 2,
      .stride_w = 2,
      .pad_h = 3,
      .pad_w = 4}},
    {"resnet-like 3x3 stride 2 pad 1",
     {.N = 2,
      .C = 8,
      .H = 8,
      .W = 8,
      .K = 16,
      .R = 3,
      .S = 3,
      .stride_h = 2,
      .stride_w = 2,
      .pad_h = 1,
      .pad_w = 1}},
};

template <typename T>
std::vector<T> random_vector(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& e : v) e = static_cast<T>(dist(rng));
  return v;
}

// Every element of `got` within rel_tol of the oracle, relative to the oracle's sum of |terms|.
template <typename T>
void expect_matches(const char* what, const std::vector<T>& got, const Naive& want,
                    double rel_tol) {
  ASSERT_EQ(got.size(), want.value.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want.value[i], rel_tol * want.scale[i] + 1e-300) << what << "[" << i << "]";
  }
}

// Tensors for one case, outputs pre-filled with NaN so that a kernel that fails to overwrite
// them is caught.
template <typename T>
struct Tensors {
  std::vector<T> x, w, bias, dy;
  explicit Tensors(const Conv2dShape& s, unsigned seed) {
    std::mt19937 rng(seed);
    x = random_vector<T>(s.N * s.C * s.H * s.W, rng);
    w = random_vector<T>(s.K * s.C * s.R * s.S, rng);
    bias = random_vector<T>(s.K, rng);
    dy = random_vector<T>(s.N * s.K * s.P() * s.Q(), rng);
  }
};
template <typename T>
std::vector<T> nan_vector(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
void check_forward(double rel_tol) {
  unsigned seed = 1;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<T> t(s, seed++);
    auto y = nan_vector<T>(s.N * s.K * s.P() * s.Q());
    conv2d_forward_cpu<T>(s, t.x.data(), t.w.data(), t.bias.data(), y.data());
    expect_matches("y", y, naive_forward(s, t.x, t.w, t.bias), rel_tol);
    // Without bias.
    const std::vector<T> zero_bias(static_cast<size_t>(s.K), T(0));
    conv2d_forward_cpu<T>(s, t.x.data(), t.w.data(), nullptr, y.data());
    expect_matches("y (no bias)", y, naive_forward(s, t.x, t.w, zero_bias), rel_tol);
  }
}

template <typename T>
void check_backward_data(double rel_tol) {
  unsigned seed = 100;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<T> t(s, seed++);
    auto dx = nan_vector<T>(s.N * s.C * s.H * s.W);
    conv2d_backward_data_cpu<T>(s, t.dy.data(), t.w.data(), dx.data());
    expect_matches("dx", dx, naive_backward_data(s, t.dy, t.w), rel_tol);
  }
}

template <typename T>
void check_backward_weight(double rel_tol) {
  unsigned seed = 200;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<T> t(s, seed++);
    auto dw = nan_vector<T>(s.K * s.C * s.R * s.S);
    auto dbias = nan_vector<T>(s.K);
    conv2d_backward_weight_cpu<T>(s, t.x.data(), t.dy.data(), dw.data(), dbias.data());
    expect_matches("dw", dw, naive_backward_weight(s, t.x, t.dy), rel_tol);
    // dbias(k) = sum over n, p, q of dy(n,k,p,q)
    Naive want_dbias(s.K);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t i = 0; i < s.P() * s.Q(); ++i)
          want_dbias.add(k, t.dy[static_cast<size_t>((n * s.K + k) * s.P() * s.Q() + i)]);
    expect_matches("dbias", dbias, want_dbias, rel_tol);
    // dbias == nullptr leaves dw unchanged.
    auto dw2 = nan_vector<T>(s.K * s.C * s.R * s.S);
    conv2d_backward_weight_cpu<T>(s, t.x.data(), t.dy.data(), dw2.data(), nullptr);
    EXPECT_EQ(dw2, dw);
  }
}

// <a, b> in double with its error scale sum |a_i b_i|.
template <typename T>
std::pair<double, double> dot(const std::vector<T>& a, const std::vector<T>& b) {
  double sum = 0.0, abs_sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    sum += double(a[i]) * b[i];
    abs_sum += std::fabs(double(a[i]) * b[i]);
  }
  return {sum, abs_sum};
}

// The three passes are one bilinear form read three ways: sum over all (output, tap) pairs of
// dy * w * x. So <conv(x; w), dy> = <x, bwd_data(dy; w)> = <w, bwd_weight(x, dy)>.
template <typename T>
void check_adjoint(double rel_tol) {
  unsigned seed = 300;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<T> t(s, seed++);
    auto y = nan_vector<T>(s.N * s.K * s.P() * s.Q());
    auto dx = nan_vector<T>(s.N * s.C * s.H * s.W);
    auto dw = nan_vector<T>(s.K * s.C * s.R * s.S);
    conv2d_forward_cpu<T>(s, t.x.data(), t.w.data(), nullptr, y.data());
    conv2d_backward_data_cpu<T>(s, t.dy.data(), t.w.data(), dx.data());
    conv2d_backward_weight_cpu<T>(s, t.x.data(), t.dy.data(), dw.data(), nullptr);
    const auto [y_dy, y_dy_scale] = dot(y, t.dy);
    const auto [x_dx, x_dx_scale] = dot(t.x, dx);
    const auto [w_dw, w_dw_scale] = dot(t.w, dw);
    // Each inner product is, up to rounding, the same sum of N*K*P*Q*C*R*S triple products; the
    // scale below bounds the size of those terms from above via the largest of the three sums.
    const double scale = std::max({y_dy_scale, x_dx_scale, w_dw_scale});
    EXPECT_NEAR(y_dy, x_dx, rel_tol * scale);
    EXPECT_NEAR(y_dy, w_dw, rel_tol * scale);
    EXPECT_GT(std::fabs(y_dy), 0.0);  // the identity must not hold trivially
  }
}

TEST(Conv2dCpu, ForwardMatchesNaiveFloat) {
  check_forward<float>(1e-5);
}
TEST(Conv2dCpu, ForwardMatchesNaiveDouble) {
  check_forward<double>(1e-12);
}
TEST(Conv2dCpu, BackwardDataMatchesNaiveFloat) {
  check_backward_data<float>(1e-5);
}
TEST(Conv2dCpu, BackwardDataMatchesNaiveDouble) {
  check_backward_data<double>(1e-12);
}
TEST(Conv2dCpu, BackwardWeightMatchesNaiveFloat) {
  check_backward_weight<float>(1e-5);
}
TEST(Conv2dCpu, BackwardWeightMatchesNaiveDouble) {
  check_backward_weight<double>(1e-12);
}
TEST(Conv2dCpu, AdjointIdentityFloat) {
  check_adjoint<float>(1e-5);
}
TEST(Conv2dCpu, AdjointIdentityDouble) {
  check_adjoint<double>(1e-12);
}

// A batch of zero images: nothing to read, and the weight gradient is zero.
TEST(Conv2dCpu, EmptyBatchZeroesWeightGradient) {
  const Conv2dShape s{.N = 0, .C = 2, .H = 3, .W = 3, .K = 2, .R = 2, .S = 2};
  auto dw = nan_vector<float>(2 * 2 * 2 * 2);
  auto dbias = nan_vector<float>(2);
  conv2d_backward_weight_cpu<float>(s, nullptr, nullptr, dw.data(), dbias.data());
  for (float v : dw) EXPECT_EQ(v, 0.0f);
  for (float v : dbias) EXPECT_EQ(v, 0.0f);
}

TEST(Conv2dCpu, RejectsInvalidShapes) {
  float buf[64] = {};
  // 5x5 filter over a 3x3 input with no padding: no output position exists.
  const Conv2dShape too_big{.N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .R = 5, .S = 5};
  EXPECT_THROW(conv2d_forward_cpu<float>(too_big, buf, buf, nullptr, buf), std::invalid_argument);
  const Conv2dShape zero_stride{
      .N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .R = 1, .S = 1, .stride_h = 0};
  EXPECT_THROW(conv2d_backward_data_cpu<float>(zero_stride, buf, buf, buf), std::invalid_argument);
  const Conv2dShape negative_pad{
      .N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .R = 1, .S = 1, .pad_w = -1};
  EXPECT_THROW(conv2d_backward_weight_cpu<float>(negative_pad, buf, buf, buf, nullptr),
               std::invalid_argument);
}

// ---- the direct path ----------------------------------------------------------------------------

// Stride-1 "same" convolutions (the direct path's domain) at its edges.
const Case kDirectCases[] = {
    {"one 1x1 image, one channel in and out",
     {.N = 1, .C = 1, .H = 1, .W = 1, .K = 1, .R = 1, .S = 1}},
    {"3x3 on a 1x1 image: every tap but the centre reads padding",
     {.N = 2, .C = 3, .H = 1, .W = 1, .K = 5, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
    {"3x3, K = 5 and C = 3 (partial 4-channel tiles both ways), 7x6 images",
     {.N = 3, .C = 3, .H = 7, .W = 6, .K = 5, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
    {"stem: C = 1, 28x28",
     {.N = 2, .C = 1, .H = 28, .W = 28, .K = 16, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
    {"19 images: chunks of 3, the last one partial",
     {.N = 19, .C = 6, .H = 9, .W = 5, .K = 7, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
    {"5x5 pad 2 on 2x9 images (taps over two image boundaries)",
     {.N = 3, .C = 2, .H = 2, .W = 9, .K = 3, .R = 5, .S = 5, .pad_h = 2, .pad_w = 2}},
    {"7x7 pad 3 on 3x2 images",
     {.N = 2, .C = 2, .H = 3, .W = 2, .K = 6, .R = 7, .S = 7, .pad_h = 3, .pad_w = 3}},
    {"1x1, 17 channels in, 9 out", {.N = 4, .C = 17, .H = 5, .W = 7, .K = 9, .R = 1, .S = 1}},
    {"resnet stage 3: 64 channels, 7x7",
     {.N = 9, .C = 64, .H = 7, .W = 7, .K = 64, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1}},
};

bool cpu_takes_direct_path() {
  const Conv2dShape probe{
      .N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1};
  return cpu::direct_conv2d_applies(probe);
}

TEST(Conv2dCpuDirect, AppliesToStrideOneSameConvolutionsOnly) {
  if (!cpu_takes_direct_path()) GTEST_SKIP() << "this CPU has no AVX2 + FMA: im2col everywhere";
  for (const Case& c : kDirectCases) EXPECT_TRUE(cpu::direct_conv2d_applies(c.shape)) << c.name;
  Conv2dShape s{.N = 2, .C = 3, .H = 8, .W = 8, .K = 4, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1};
  s.stride_h = 2;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "stride 2";
  s.stride_h = 1;
  s.pad_w = 0;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "not 'same' padding";
  s.pad_w = 1;
  s.S = 1;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "R != S";
  s.S = 3;
  s.R = s.S = 9;
  s.pad_h = s.pad_w = 4;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "9x9: larger than the path handles";
  s.R = s.S = 2;
  s.pad_h = s.pad_w = 0;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "even filter";
  s.R = s.S = 3;
  s.pad_h = s.pad_w = 1;
  s.N = 0;
  EXPECT_FALSE(cpu::direct_conv2d_applies(s)) << "empty batch";
  for (const Case& c : kCases) {
    const Conv2dShape& k = c.shape;
    const bool same = k.stride_h == 1 && k.stride_w == 1 && k.R == k.S && k.R % 2 == 1 &&
                      k.pad_h == k.R / 2 && k.pad_w == k.S / 2;
    EXPECT_EQ(cpu::direct_conv2d_applies(k), same) << c.name;
  }
}

// The direct passes called directly, against the double oracle (outputs pre-filled with NaN).
TEST(Conv2dCpuDirect, MatchesNaiveOracle) {
  if (!cpu_takes_direct_path()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  unsigned seed = 400;
  for (const Case& c : kDirectCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<float> t(s, seed++);
    auto y = nan_vector<float>(s.N * s.K * s.P() * s.Q());
    cpu::direct_conv2d_forward(s, t.x.data(), t.w.data(), t.bias.data(), y.data());
    expect_matches("y", y, naive_forward(s, t.x, t.w, t.bias), 1e-5);
    auto dx = nan_vector<float>(s.N * s.C * s.H * s.W);
    cpu::direct_conv2d_backward_data(s, t.dy.data(), t.w.data(), dx.data());
    expect_matches("dx", dx, naive_backward_data(s, t.dy, t.w), 1e-5);
    auto dw = nan_vector<float>(s.K * s.C * s.R * s.S);
    cpu::direct_conv2d_backward_weight(s, t.x.data(), t.dy.data(), dw.data());
    expect_matches("dw", dw, naive_backward_weight(s, t.x, t.dy), 1e-5);
  }
}

// Chunks depend on the shape alone and backward-weight adds its per-chunk sums in chunk order, so
// the results are bitwise the same for any thread count; and conv2d_*_cpu<float> runs exactly the
// direct path on these shapes.
TEST(Conv2dCpuDirect, BitwiseTheSameForAnyThreadCountAndThroughTheDispatch) {
  if (!cpu_takes_direct_path()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  unsigned seed = 500;
  for (const Case& c : kDirectCases) {
    SCOPED_TRACE(c.name);
    const Conv2dShape& s = c.shape;
    const Tensors<float> t(s, seed++);
    std::vector<std::vector<float>> ys, dxs, dws;
    for (int threads : {1, 2, 3}) {
      cpu::set_cpu_kernel_threads(threads);
      auto y = nan_vector<float>(s.N * s.K * s.P() * s.Q());
      auto dx = nan_vector<float>(s.N * s.C * s.H * s.W);
      auto dw = nan_vector<float>(s.K * s.C * s.R * s.S);
      cpu::direct_conv2d_forward(s, t.x.data(), t.w.data(), nullptr, y.data());
      cpu::direct_conv2d_backward_data(s, t.dy.data(), t.w.data(), dx.data());
      cpu::direct_conv2d_backward_weight(s, t.x.data(), t.dy.data(), dw.data());
      ys.push_back(y);
      dxs.push_back(dx);
      dws.push_back(dw);
    }
    EXPECT_EQ(ys[1], ys[0]);
    EXPECT_EQ(ys[2], ys[0]);
    EXPECT_EQ(dxs[1], dxs[0]);
    EXPECT_EQ(dxs[2], dxs[0]);
    EXPECT_EQ(dws[1], dws[0]);
    EXPECT_EQ(dws[2], dws[0]);
    auto y = nan_vector<float>(s.N * s.K * s.P() * s.Q());
    auto dx = nan_vector<float>(s.N * s.C * s.H * s.W);
    auto dw = nan_vector<float>(s.K * s.C * s.R * s.S);
    conv2d_forward_cpu<float>(s, t.x.data(), t.w.data(), nullptr, y.data());
    conv2d_backward_data_cpu<float>(s, t.dy.data(), t.w.data(), dx.data());
    conv2d_backward_weight_cpu<float>(s, t.x.data(), t.dy.data(), dw.data(), nullptr);
    EXPECT_EQ(y, ys[0]);
    EXPECT_EQ(dx, dxs[0]);
    EXPECT_EQ(dw, dws[0]);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  cpu::set_cpu_kernel_threads(hw == 0 ? 1 : static_cast<int>(hw));
}

// With the AVX2 kernels switched off (kernels/cpu/isa.h), the same shapes take im2col + GEMM.
TEST(Conv2dCpuDirect, WithAvx2OffTheDispatchTakesIm2col) {
  if (!cpu_takes_direct_path()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  const Case& c = kDirectCases[4];
  const Conv2dShape& s = c.shape;
  const Tensors<float> t(s, 700);
  cpu::set_avx2_kernels_enabled(false);
  EXPECT_FALSE(cpu::direct_conv2d_applies(s));
  auto y = nan_vector<float>(s.N * s.K * s.P() * s.Q());
  conv2d_forward_cpu<float>(s, t.x.data(), t.w.data(), nullptr, y.data());
  cpu::set_avx2_kernels_enabled(true);
  EXPECT_TRUE(cpu::direct_conv2d_applies(s));
  auto ref = nan_vector<float>(s.N * s.K * s.P() * s.Q());
  cpu::im2col_conv2d_forward<float>(s, t.x.data(), t.w.data(), nullptr, ref.data());
  EXPECT_EQ(y, ref);
}

// The direct path is at least as accurate as im2col + GEMM: on a ResNet stage-2 layer its
// worst error against the oracle (relative to each element's sum of |terms|) is no larger than
// 2x im2col's. (It sums 4 input channels x 9 taps in registers before adding to the running total;
// without that, a 64-channel backward-data chained 576 additions and erred 3-4x more.)
TEST(Conv2dCpuDirect, NoLessAccurateThanIm2col) {
  if (!cpu_takes_direct_path()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  const Conv2dShape s{
      .N = 4, .C = 64, .H = 14, .W = 14, .K = 64, .R = 3, .S = 3, .pad_h = 1, .pad_w = 1};
  const Tensors<float> t(s, 600);
  const auto worst = [](const std::vector<float>& got, const Naive& want) {
    double e = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      e = std::max(e, std::fabs(got[i] - want.value[i]) / (want.scale[i] + 1e-300));
    }
    return e;
  };
  std::vector<float> a(static_cast<size_t>(s.N * s.K * s.H * s.W)), b(a.size());
  cpu::direct_conv2d_forward(s, t.x.data(), t.w.data(), nullptr, a.data());
  cpu::im2col_conv2d_forward<float>(s, t.x.data(), t.w.data(), nullptr, b.data());
  const std::vector<float> zero_bias(static_cast<size_t>(s.K), 0.0f);
  const Naive y = naive_forward(s, t.x, t.w, zero_bias);
  EXPECT_LE(worst(a, y), 2 * worst(b, y)) << "forward";
  std::vector<float> dx1(static_cast<size_t>(s.N * s.C * s.H * s.W)), dx2(dx1.size());
  cpu::direct_conv2d_backward_data(s, t.dy.data(), t.w.data(), dx1.data());
  cpu::im2col_conv2d_backward_data<float>(s, t.dy.data(), t.w.data(), dx2.data());
  const Naive dx = naive_backward_data(s, t.dy, t.w);
  EXPECT_LE(worst(dx1, dx), 2 * worst(dx2, dx)) << "backward-data";
  std::vector<float> dw1(static_cast<size_t>(s.K * s.C * 9)), dw2(dw1.size());
  cpu::direct_conv2d_backward_weight(s, t.x.data(), t.dy.data(), dw1.data());
  cpu::im2col_conv2d_backward_weight<float>(s, t.x.data(), t.dy.data(), dw2.data());
  const Naive dw = naive_backward_weight(s, t.x, t.dy);
  EXPECT_LE(worst(dw1, dw), 2 * worst(dw2, dw)) << "backward-weight";
}

}  // namespace
}  // namespace pb::kernels
