// Elementwise CPU kernels: known values, finite-difference derivatives, in-place use.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/elementwise.h"

namespace pb::kernels {
namespace {

TEST(ElementwiseCpu, ReluForwardBackward) {
  const std::vector<double> x = {-2.0, -0.5, 0.0, 0.25, 3.0};
  std::vector<double> y(5);
  relu_forward_cpu<double>(5, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<double>{0.0, 0.0, 0.0, 0.25, 3.0}));

  const std::vector<double> dy = {1, 2, 3, 4, 5};
  std::vector<double> dx(5);
  relu_backward_cpu<double>(5, x.data(), dy.data(), dx.data());
  EXPECT_EQ(dx, (std::vector<double>{0, 0, 0, 4, 5}));  // dx = 0 at x == 0

  // In place (y == x) is allowed.
  std::vector<float> v = {-1.0f, 2.0f, -3.0f};
  relu_forward_cpu<float>(3, v.data(), v.data());
  EXPECT_EQ(v, (std::vector<float>{0.0f, 2.0f, 0.0f}));
}

// A NaN reaching a ReLU stays NaN, so divergence is visible downstream.
TEST(ElementwiseCpu, ReluPropagatesNaN) {
  const float x = std::numeric_limits<float>::quiet_NaN();
  float y = 0.0f;
  relu_forward_cpu<float>(1, &x, &y);
  EXPECT_TRUE(std::isnan(y));
}

// gelu(x) = x Phi(x): reference values from the standard normal CDF.
TEST(ElementwiseCpu, GeluKnownValues) {
  const std::vector<double> x = {1.0, -1.0, 0.0, 3.0, -10.0};
  std::vector<double> y(5);
  gelu_forward_cpu<double>(5, x.data(), y.data());
  EXPECT_NEAR(y[0], 0.8413447460685429, 1e-15);
  EXPECT_NEAR(y[1], -0.15865525393145707, 1e-15);
  EXPECT_EQ(y[2], 0.0);
  EXPECT_NEAR(y[3], 2.9959503059051097, 1e-14);
  // Far left tail: -10 * Phi(-10) = -7.619853024160526e-23. The 1 + erf(x/sqrt 2) form cancels
  // to exactly 0 here; the erfc form keeps full relative precision.
  EXPECT_NEAR(y[4], -7.619853024160526e-23, 1e-36);

  std::vector<float> yf(5);
  const std::vector<float> xf = {1.0f, -1.0f, 0.0f, 3.0f, -10.0f};
  gelu_forward_cpu<float>(5, xf.data(), yf.data());
  EXPECT_NEAR(yf[0], 0.8413447460685429, 2e-7);
  EXPECT_NEAR(yf[1], -0.15865525393145707, 2e-7);
  EXPECT_NEAR(yf[3], 2.9959503059051097, 5e-7);
  EXPECT_NEAR(yf[4], -7.619853024160526e-23, 1e-28);
}

// Derivative Phi(x) + x phi(x): known values and central differences of the forward kernel.
TEST(ElementwiseCpu, GeluBackwardMatchesFiniteDifferences) {
  const std::vector<double> x = {-6.0, -3.0, -1.0, -0.3, 0.0, 0.2, 1.0, 2.5, 5.0};
  const int64_t n = static_cast<int64_t>(x.size());
  const std::vector<double> dy(x.size(), 1.0);
  std::vector<double> dx(x.size());
  gelu_backward_cpu<double>(n, x.data(), dy.data(), dx.data());
  EXPECT_NEAR(dx[2], -0.08331547058768629, 1e-15);  // gelu'(-1)
  EXPECT_NEAR(dx[4], 0.5, 1e-15);                   // gelu'(0) = Phi(0)
  EXPECT_NEAR(dx[6], 1.0833154705876864, 1e-15);    // gelu'(1)
  const double h = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double xp = x[i] + h, xm = x[i] - h;
    double yp = 0.0, ym = 0.0;
    gelu_forward_cpu<double>(1, &xp, &yp);
    gelu_forward_cpu<double>(1, &xm, &ym);
    EXPECT_NEAR(dx[i], (yp - ym) / (2 * h), 1e-8) << "x=" << x[i];
  }
  // dy scales the result.
  const double x0 = 0.7, dy0 = -2.5;
  double dx0 = 0.0, dx1 = 0.0, one = 1.0;
  gelu_backward_cpu<double>(1, &x0, &dy0, &dx0);
  gelu_backward_cpu<double>(1, &x0, &one, &dx1);
  EXPECT_DOUBLE_EQ(dx0, -2.5 * dx1);
}

TEST(ElementwiseCpu, AddScaleAxpyFill) {
  const std::vector<double> a = {1, 2, 3}, b = {10, -20, 0.5};
  std::vector<double> y(3);
  add_cpu<double>(3, a.data(), b.data(), y.data());
  EXPECT_EQ(y, (std::vector<double>{11, -18, 3.5}));

  scale_cpu<double>(3, -2.0, a.data(), y.data());
  EXPECT_EQ(y, (std::vector<double>{-2, -4, -6}));

  std::vector<double> acc = {1, 1, 1};
  axpy_cpu<double>(3, 0.5, a.data(), acc.data());  // accumulates, does not overwrite
  EXPECT_EQ(acc, (std::vector<double>{1.5, 2, 2.5}));
  axpy_cpu<double>(3, 0.5, a.data(), acc.data());
  EXPECT_EQ(acc, (std::vector<double>{2, 3, 4}));

  std::vector<float> f(4, 1.0f);
  fill_cpu<float>(4, -7.5f, f.data());
  EXPECT_EQ(f, (std::vector<float>(4, -7.5f)));
  fill_cpu<float>(0, 3.0f, f.data());  // n == 0 touches nothing
  EXPECT_EQ(f, (std::vector<float>(4, -7.5f)));

  // In place: y == a, y == x.
  std::vector<float> v = {1.0f, 2.0f};
  const std::vector<float> w = {0.5f, 0.25f};
  add_cpu<float>(2, v.data(), w.data(), v.data());
  EXPECT_EQ(v, (std::vector<float>{1.5f, 2.25f}));
  scale_cpu<float>(2, 4.0f, v.data(), v.data());
  EXPECT_EQ(v, (std::vector<float>{6.0f, 9.0f}));
}

// add_relu is add then relu, bitwise (the sum is rounded before the clamp), NaN preserved;
// add_relu_backward masks by the output and equals relu_backward applied to y.
template <typename T>
void check_add_relu_fused() {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> a = {T(-2), T(0.5), T(1e-3), T(3), nan, T(-0.25), T(0.1)};
  const std::vector<T> b = {T(1), T(-0.5), T(-2e-3), T(0.25), T(1), T(0.25), T(0.2)};
  const int64_t n = static_cast<int64_t>(a.size());
  std::vector<T> sum(n), unfused(n), fused(n);
  add_cpu<T>(n, a.data(), b.data(), sum.data());
  relu_forward_cpu<T>(n, sum.data(), unfused.data());
  add_relu_cpu<T>(n, a.data(), b.data(), fused.data());
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(unfused[i])) {
      EXPECT_TRUE(std::isnan(fused[i])) << "i=" << i;
    } else {
      EXPECT_EQ(fused[i], unfused[i]) << "i=" << i;
    }
  }
  EXPECT_TRUE(std::isnan(fused[4]));

  const std::vector<T> dy = {T(1), T(2), T(3), T(4), T(5), T(6), T(7)};
  std::vector<T> dx_unfused(n), dx_fused(n);
  relu_backward_cpu<T>(n, fused.data(), dy.data(), dx_unfused.data());
  add_relu_backward_cpu<T>(n, fused.data(), dy.data(), dx_fused.data());
  EXPECT_EQ(dx_fused, dx_unfused);
  // y = {0, 0, 0, 3.25, NaN, 0, 0.3}: only y > 0 passes dy (0.5 + -0.5 = 0 gives 0).
  EXPECT_EQ(dx_fused, (std::vector<T>{0, 0, 0, 4, 0, 0, 7}));

  // In place: y == a.
  std::vector<T> inplace = a;
  add_relu_cpu<T>(n, inplace.data(), b.data(), inplace.data());
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(fused[i])) {
      EXPECT_EQ(inplace[i], fused[i]) << "i=" << i;
    }
  }
}

TEST(ElementwiseCpu, AddReluFusedEqualsAddThenRelu) {
  check_add_relu_fused<float>();
  check_add_relu_fused<double>();
}

// Arrays large enough to be split over the kernel pool (and an odd length, so the last block is
// partial) give, for 1 to 3 threads and in place, exactly the element-by-element result.
TEST(ElementwiseCpu, LargeArraysSplitOverThreadsMatchElementByElement) {
  const int64_t n = 200003;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> a(n), b(n), dy(n);
  for (int64_t i = 0; i < n; ++i) a[i] = dist(rng), b[i] = dist(rng), dy[i] = dist(rng);
  for (int threads : {1, 2, 3}) {
    cpu::set_cpu_kernel_threads(threads);
    SCOPED_TRACE(::testing::Message() << "threads=" << threads);
    std::vector<float> y(n), g(n), in_place = a;
    add_relu_cpu<float>(n, a.data(), b.data(), y.data());
    add_relu_backward_cpu<float>(n, y.data(), dy.data(), g.data());
    axpy_cpu<float>(n, 0.5f, b.data(), in_place.data());
    for (int64_t i = 0; i < n; ++i) {
      const float s = a[i] + b[i];
      ASSERT_EQ(y[i], s < 0.0f ? 0.0f : s) << i;
      ASSERT_EQ(g[i], y[i] > 0.0f ? dy[i] : 0.0f) << i;
      ASSERT_EQ(in_place[i], a[i] + 0.5f * b[i]) << i;
    }
    gelu_backward_cpu<float>(n, a.data(), dy.data(), g.data());
    std::vector<float> one(1);
    for (int64_t i = 0; i < n; i += 997) {
      gelu_backward_cpu<float>(1, &a[i], &dy[i], one.data());
      ASSERT_EQ(g[i], one[0]) << i;
    }
  }
  const unsigned hw = std::thread::hardware_concurrency();
  cpu::set_cpu_kernel_threads(hw == 0 ? 1 : static_cast<int>(hw));
}

}  // namespace
}  // namespace pb::kernels
