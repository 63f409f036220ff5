// Pooling CPU kernels: hand-computed max/avg pooling (padding, overlapping windows, ties), the
// routing of gradients in backward, global average pooling, and randomized comparisons against a
// naive implementation written here in double.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/pool.h"

namespace pb::kernels {
namespace {

// ---- max pooling, hand-computed -----------------------------------------------------------------

// x (1,1,4,4), 2x2 windows, stride 2:
//    1  3 | 2  4
//    5  6 | 1  0        y = [6 4; 8 9]
//   ------+------       argmax (h*4+w) = [5 3; 13 10]: the bottom-right window holds three 9s at
//    7  2 | 9  9        (2,2), (2,3), (3,2); the first in row-major order, (2,2) = 10, wins.
//    0  8 | 9  1
// Backward with dy = [1 2; 3 4] puts each dy on its window's argmax and zero elsewhere.
template <typename T>
void check_max_pool_2x2() {
  const Pool2dShape s{
      .N = 1, .C = 1, .H = 4, .W = 4, .kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};
  const T x[] = {1, 3, 2, 4, 5, 6, 1, 0, 7, 2, 9, 9, 0, 8, 9, 1};
  T y[4];
  int32_t argmax[4];
  max_pool2d_forward_cpu<T>(s, x, y, argmax);
  const T y_expected[] = {6, 4, 8, 9};
  const int32_t argmax_expected[] = {5, 3, 13, 10};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[i], y_expected[i]) << "y[" << i << "]";
    EXPECT_EQ(argmax[i], argmax_expected[i]) << "argmax[" << i << "]";
  }
  // argmax may be omitted.
  T y2[4];
  max_pool2d_forward_cpu<T>(s, x, y2, nullptr);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y2[i], y_expected[i]);

  const T dy[] = {1, 2, 3, 4};
  T dx[16];
  max_pool2d_backward_cpu<T>(s, dy, argmax, dx);
  T dx_expected[16] = {};
  dx_expected[5] = 1;
  dx_expected[3] = 2;
  dx_expected[13] = 3;
  dx_expected[10] = 4;
  for (int i = 0; i < 16; ++i) EXPECT_EQ(dx[i], dx_expected[i]) << "dx[" << i << "]";
}

TEST(MaxPool2dCpu, HandComputed2x2Float) {
  check_max_pool_2x2<float>();
}
TEST(MaxPool2dCpu, HandComputed2x2Double) {
  check_max_pool_2x2<double>();
}

// All-equal input: every window is a tie, so every argmax is its window's top-left cell.
TEST(MaxPool2dCpu, TiesFirstMaxWins) {
  const Pool2dShape s{
      .N = 1, .C = 1, .H = 4, .W = 4, .kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};
  const std::vector<float> x(16, 7.0f);
  float y[4];
  int32_t argmax[4];
  max_pool2d_forward_cpu<float>(s, x.data(), y, argmax);
  const int32_t expected[] = {0, 2, 8, 10};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[i], 7.0f);
    EXPECT_EQ(argmax[i], expected[i]) << i;
  }
}

// x (1,1,3,3) all negative, 3x3 windows, stride 2, pad 1 -> P = Q = (3 + 2 - 3) / 2 + 1 = 2.
// Each window holds 4 real cells and 5 padded ones; padding is -inf, so it must never win (with
// zero padding every max would be 0):
//   x = -1 -2 -3     window (0,0): cells (0,0) (0,1) (1,0) (1,1) -> -1 at 0
//       -4 -5 -6     window (0,1): cells (0,1) (0,2) (1,1) (1,2) -> -2 at 1
//       -7 -8 -9     window (1,0): cells (1,0) (1,1) (2,0) (2,1) -> -4 at 3
//                    window (1,1): cells (1,1) (1,2) (2,1) (2,2) -> -5 at 4
TEST(MaxPool2dCpu, PaddingNeverWins) {
  const Pool2dShape s{.N = 1,
                      .C = 1,
                      .H = 3,
                      .W = 3,
                      .kh = 3,
                      .kw = 3,
                      .stride_h = 2,
                      .stride_w = 2,
                      .pad_h = 1,
                      .pad_w = 1};
  const double x[] = {-1, -2, -3, -4, -5, -6, -7, -8, -9};
  double y[4];
  int32_t argmax[4];
  max_pool2d_forward_cpu<double>(s, x, y, argmax);
  const double y_expected[] = {-1, -2, -4, -5};
  const int32_t argmax_expected[] = {0, 1, 3, 4};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[i], y_expected[i]) << i;
    EXPECT_EQ(argmax[i], argmax_expected[i]) << i;
  }
}

// Same geometry, the centre cell is the max of all four overlapping windows, so backward must add
// all four gradients onto it: dx(1,1) = 1 + 2 + 3 + 4 = 10, every other cell 0.
TEST(MaxPool2dCpu, BackwardAccumulatesOverlappingWindows) {
  const Pool2dShape s{.N = 1,
                      .C = 1,
                      .H = 3,
                      .W = 3,
                      .kh = 3,
                      .kw = 3,
                      .stride_h = 2,
                      .stride_w = 2,
                      .pad_h = 1,
                      .pad_w = 1};
  const float x[] = {0, 0, 0, 0, 9, 0, 0, 0, 0};
  float y[4];
  int32_t argmax[4];
  max_pool2d_forward_cpu<float>(s, x, y, argmax);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(argmax[i], 4) << i;
  const float dy[] = {1, 2, 3, 4};
  std::vector<float> dx(9, std::numeric_limits<float>::quiet_NaN());
  max_pool2d_backward_cpu<float>(s, dy, argmax, dx.data());
  for (int i = 0; i < 9; ++i) EXPECT_EQ(dx[i], i == 4 ? 10.0f : 0.0f) << i;
}

// A NaN in a window is the max (the first NaN), so a diverging network is not silently masked.
TEST(MaxPool2dCpu, NanPropagates) {
  const Pool2dShape s{
      .N = 1, .C = 1, .H = 2, .W = 2, .kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float x[] = {1, nan, 5, nan};
  float y[1];
  int32_t argmax[1];
  max_pool2d_forward_cpu<float>(s, x, y, argmax);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(argmax[0], 1);
}

// ---- average pooling, hand-computed -------------------------------------------------------------

// The 4x4 x of check_max_pool_2x2, 2x2 windows, stride 2:
//   y = [(1+3+5+6)/4  (2+4+1+0)/4; (7+2+0+8)/4  (9+9+9+1)/4] = [3.75 1.75; 4.25 7]
template <typename T>
void check_avg_pool_2x2() {
  const Pool2dShape s{
      .N = 1, .C = 1, .H = 4, .W = 4, .kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};
  const T x[] = {1, 3, 2, 4, 5, 6, 1, 0, 7, 2, 9, 9, 0, 8, 9, 1};
  T y[4];
  avg_pool2d_forward_cpu<T>(s, x, y);
  EXPECT_EQ(y[0], T(3.75));
  EXPECT_EQ(y[1], T(1.75));
  EXPECT_EQ(y[2], T(4.25));
  EXPECT_EQ(y[3], T(7));
}

TEST(AvgPool2dCpu, HandComputed2x2Float) {
  check_avg_pool_2x2<float>();
}
TEST(AvgPool2dCpu, HandComputed2x2Double) {
  check_avg_pool_2x2<double>();
}

// x (1,1,3,3) = 1..9, 3x3 windows, stride 2, pad 1. Padded cells count in the divisor (9):
//   y = [(1+2+4+5)/9  (2+3+5+6)/9; (4+5+7+8)/9  (5+6+8+9)/9] = [12 16; 24 28] / 9
// Backward with dy = [9 18; 27 36]: each window spreads dy/9 = 1, 2, 3, 4 over its 4 real cells
// (the padded 5/9 is dropped):
//   dx = [1 1+2 2; 1+3 1+2+3+4 2+4; 3 3+4 4] = [1 3 2; 4 10 6; 3 7 4]
template <typename T>
void check_avg_pool_padded() {
  const Pool2dShape s{.N = 1,
                      .C = 1,
                      .H = 3,
                      .W = 3,
                      .kh = 3,
                      .kw = 3,
                      .stride_h = 2,
                      .stride_w = 2,
                      .pad_h = 1,
                      .pad_w = 1};
  const T x[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  T y[4];
  avg_pool2d_forward_cpu<T>(s, x, y);
  const T sums[] = {12, 16, 24, 28};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], sums[i] / T(9), 1e-6) << i;

  const T dy[] = {9, 18, 27, 36};
  std::vector<T> dx(9, std::numeric_limits<T>::quiet_NaN());
  avg_pool2d_backward_cpu<T>(s, dy, dx.data());
  const T dx_expected[] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(dx[i], dx_expected[i], 1e-5) << i;
}

TEST(AvgPool2dCpu, PaddingCountsInDivisorFloat) {
  check_avg_pool_padded<float>();
}
TEST(AvgPool2dCpu, PaddingCountsInDivisorDouble) {
  check_avg_pool_padded<double>();
}

// ---- global average pooling ---------------------------------------------------------------------

// x (2,2,3): planes [1 2 3] [4 5 6] [-1 0 1] [10 20 30] -> y = [2 5 0 20].
// Backward with dy = [3 6 9 12] spreads dy/3 over each plane.
template <typename T>
void check_global_avg_pool() {
  const T x[] = {1, 2, 3, 4, 5, 6, -1, 0, 1, 10, 20, 30};
  T y[4];
  global_avg_pool_forward_cpu<T>(2, 2, 3, x, y);
  const T y_expected[] = {2, 5, 0, 20};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], y_expected[i], 1e-5) << i;
  const T dy[] = {3, 6, 9, 12};
  T dx[12];
  global_avg_pool_backward_cpu<T>(2, 2, 3, dy, dx);
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(dx[i], T(i / 3 + 1), 1e-6) << i;
}

TEST(GlobalAvgPoolCpu, HandComputedFloat) {
  check_global_avg_pool<float>();
}
TEST(GlobalAvgPoolCpu, HandComputedDouble) {
  check_global_avg_pool<double>();
}

// ---- randomized, against a naive implementation
// --------------------------------------------------

// Naive pooling of one output cell: visits the full kh x kw window, padded cells included.
struct NaiveCell {
  double max = -std::numeric_limits<double>::infinity();
  int64_t argmax = -1;
  double sum = 0.0;
};
template <typename T>
NaiveCell naive_pool_cell(const Pool2dShape& s, const T* plane, int64_t p, int64_t q) {
  NaiveCell cell;
  for (int64_t i = 0; i < s.kh; ++i) {
    for (int64_t j = 0; j < s.kw; ++j) {
      const int64_t h = p * s.stride_h - s.pad_h + i, w = q * s.stride_w - s.pad_w + j;
      const bool inside = h >= 0 && h < s.H && w >= 0 && w < s.W;
      const double v = inside ? double(plane[h * s.W + w]) : 0.0;  // avg: padding counts as 0
      cell.sum += v;
      if (inside && (cell.argmax < 0 || v > cell.max)) {
        cell.max = v;
        cell.argmax = h * s.W + w;
      }
    }
  }
  return cell;
}

const Pool2dShape kPoolShapes[] = {
    {.N = 2,
     .C = 3,
     .H = 7,
     .W = 5,
     .kh = 3,
     .kw = 2,
     .stride_h = 2,
     .stride_w = 1,
     .pad_h = 1,
     .pad_w = 0},
    {.N = 1,
     .C = 2,
     .H = 8,
     .W = 8,
     .kh = 3,
     .kw = 3,
     .stride_h = 2,
     .stride_w = 2,
     .pad_h = 1,
     .pad_w = 1},
    {.N = 3, .C = 1, .H = 5, .W = 6, .kh = 2, .kw = 2, .stride_h = 3, .stride_w = 3},
};

template <typename T>
void check_against_naive(double tol) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (const Pool2dShape& s : kPoolShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "H=" << s.H << " W=" << s.W << " k=" << s.kh << "x" << s.kw);
    const int64_t P = s.P(), Q = s.Q(), planes = s.N * s.C;
    std::vector<T> x(static_cast<size_t>(planes * s.H * s.W)),
        dy(static_cast<size_t>(planes * P * Q));
    for (T& v : x) v = T(dist(rng));
    for (T& v : dy) v = T(dist(rng));
    std::vector<T> y_max(dy.size()), y_avg(dy.size()), dx_max(x.size()), dx_avg(x.size());
    std::vector<int32_t> argmax(dy.size());
    max_pool2d_forward_cpu<T>(s, x.data(), y_max.data(), argmax.data());
    avg_pool2d_forward_cpu<T>(s, x.data(), y_avg.data());
    max_pool2d_backward_cpu<T>(s, dy.data(), argmax.data(), dx_max.data());
    avg_pool2d_backward_cpu<T>(s, dy.data(), dx_avg.data());

    std::vector<double> dx_max_want(x.size(), 0.0), dx_avg_want(x.size(), 0.0);
    for (int64_t pl = 0; pl < planes; ++pl) {
      for (int64_t p = 0; p < P; ++p) {
        for (int64_t q = 0; q < Q; ++q) {
          const size_t o = static_cast<size_t>((pl * P + p) * Q + q);
          const NaiveCell cell = naive_pool_cell(s, x.data() + pl * s.H * s.W, p, q);
          ASSERT_EQ(y_max[o], T(cell.max)) << "max at " << o;
          ASSERT_EQ(argmax[o], cell.argmax) << "argmax at " << o;
          ASSERT_NEAR(y_avg[o], cell.sum / double(s.kh * s.kw), tol) << "avg at " << o;
          dx_max_want[static_cast<size_t>(pl * s.H * s.W + cell.argmax)] += dy[o];
          // Avg backward: spread dy / (kh*kw) over the window's cells inside the input.
          for (int64_t i = 0; i < s.kh; ++i) {
            for (int64_t j = 0; j < s.kw; ++j) {
              const int64_t h = p * s.stride_h - s.pad_h + i, w = q * s.stride_w - s.pad_w + j;
              if (h >= 0 && h < s.H && w >= 0 && w < s.W) {
                dx_avg_want[static_cast<size_t>((pl * s.H + h) * s.W + w)] +=
                    dy[o] / double(s.kh * s.kw);
              }
            }
          }
        }
      }
    }
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(dx_max[i], dx_max_want[i], tol) << "max dx at " << i;
      ASSERT_NEAR(dx_avg[i], dx_avg_want[i], tol) << "avg dx at " << i;
    }
  }
}

TEST(Pool2dCpu, MatchesNaiveFloat) {
  check_against_naive<float>(1e-5);
}
TEST(Pool2dCpu, MatchesNaiveDouble) {
  check_against_naive<double>(1e-12);
}

TEST(Pool2dCpu, RejectsInvalidShapes) {
  float buf[16] = {};
  const Pool2dShape too_big{
      .N = 1, .C = 1, .H = 2, .W = 2, .kh = 3, .kw = 3, .stride_h = 1, .stride_w = 1};
  EXPECT_THROW(avg_pool2d_forward_cpu<float>(too_big, buf, buf), std::invalid_argument);
  const Pool2dShape zero_stride{
      .N = 1, .C = 1, .H = 2, .W = 2, .kh = 1, .kw = 1, .stride_h = 0, .stride_w = 1};
  EXPECT_THROW(max_pool2d_forward_cpu<float>(zero_stride, buf, buf, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace pb::kernels
