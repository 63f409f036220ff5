// Dropout CPU kernels and the Philox generator behind their mask.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/dropout.h"
#include "kernels/philox.h"

namespace pb::kernels {
namespace {

// Random123's published known-answer vectors for philox4x32-10 (kat_vectors).
TEST(Philox, KnownAnswerVectors) {
  const Philox4x32 zero = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);

  const uint32_t f = 0xffffffffu;
  const Philox4x32 ones = philox4x32_10(f, f, f, f, f, f);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);

  // The third Random123 vector: counter and key from the digits of pi.
  const Philox4x32 pi =
      philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

// philox_uniform: in [0, 1), on the 2^-24 grid, mean ~ 1/2 (sd of the mean of 1e5 draws is
// sqrt(1/12 / 1e5) ~ 9.1e-4; bound 5 sd).
TEST(Philox, UniformRangeAndMean) {
  const int64_t n = 100000;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float u = philox_uniform(42, 7, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    ASSERT_EQ(std::ldexp(static_cast<double>(u), 24), std::floor(std::ldexp(u, 24)));
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 5 * 9.2e-4);
}

// Inputs that are never 0, so a 0 in the output always means "dropped".
std::vector<float> nonzero_inputs(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 13) - 6.5f;
  return x;
}

TEST(DropoutCpu, ZeroProbabilityIsExactCopy) {
  std::vector<float> x = nonzero_inputs(1000);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[4] = -0.0f;
  x[5] = 1e-40f;  // subnormal
  std::vector<float> y(x.size(), 123.0f);
  dropout_forward_cpu<float>(1000, 0.0f, 1, 2, x.data(), y.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(std::memcmp(&x[i], &y[i], sizeof(float)), 0) << "i=" << i;
  }
  std::vector<double> dy = {1.5, -2.25, 3.0}, dx(3);
  dropout_backward_cpu<double>(3, 0.0f, 1, 2, dy.data(), dx.data());
  EXPECT_EQ(dx, dy);
}

// Kept fraction: the kept count is Binomial(n, 1 - p) (up to the 2^-24 grid of the uniforms), so
// |kept/n - (1 - p)| <= 5 sqrt(p (1 - p) / n) fails with probability < 1e-6 for a fresh seed;
// with fixed seeds the test is deterministic.
TEST(DropoutCpu, KeptFractionScaleAndMask) {
  const int64_t n = 100000;
  const std::vector<float> x = nonzero_inputs(n);
  for (const float p : {0.1f, 0.5f, 0.9f}) {
    std::vector<float> y(n);
    dropout_forward_cpu<float>(n, p, 1234, 5, x.data(), y.data());
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool expect_keep = philox_uniform(1234, 5, static_cast<uint64_t>(i)) >= p;
      ASSERT_EQ(y[i] != 0.0f, expect_keep) << "p=" << p << " i=" << i;
      if (expect_keep) {
        ++kept;
        EXPECT_FLOAT_EQ(y[i], x[i] / (1.0f - p)) << "p=" << p << " i=" << i;
      }
    }
    const double bound = 5.0 * std::sqrt(p * (1.0 - p) / n);
    EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, bound) << "p=" << p;
  }
}

// The backward pass recomputes the same mask: dx is dy / (1 - p) exactly where y was kept.
TEST(DropoutCpu, BackwardUsesForwardMask) {
  const int64_t n = 10000;
  const float p = 0.3f;
  const std::vector<float> x = nonzero_inputs(n);
  std::vector<float> dy(n), y(n), dx(n);
  for (int64_t i = 0; i < n; ++i) dy[i] = 0.5f + static_cast<float>(i % 5);
  dropout_forward_cpu<float>(n, p, 99, 3, x.data(), y.data());
  dropout_backward_cpu<float>(n, p, 99, 3, dy.data(), dx.data());
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(y[i] != 0.0f, dx[i] != 0.0f) << "i=" << i;
    if (y[i] != 0.0f) {
      ++kept;
      EXPECT_FLOAT_EQ(dx[i], dy[i] / (1.0f - p)) << "i=" << i;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, n);

  // double inputs use the same mask as float ones.
  std::vector<double> xd(x.begin(), x.end()), yd(n);
  dropout_forward_cpu<double>(n, p, 99, 3, xd.data(), yd.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(yd[i] != 0.0, y[i] != 0.0f) << "i=" << i;
}

std::vector<bool> dropout_mask(int64_t n, float p, uint64_t seed, uint64_t offset) {
  const std::vector<float> x = nonzero_inputs(n);
  std::vector<float> y(n);
  dropout_forward_cpu<float>(n, p, seed, offset, x.data(), y.data());
  std::vector<bool> mask(n);
  for (int64_t i = 0; i < n; ++i) mask[i] = y[i] != 0.0f;
  return mask;
}

int64_t count_differences(const std::vector<bool>& a, const std::vector<bool>& b) {
  int64_t d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

// Same (seed, offset) -> same mask; another offset or seed -> a different one. For p = 1/2 two
// independent masks differ in about half the elements (5000 +- 50 for n = 1e4).
TEST(DropoutCpu, MaskIsDeterministicPerSeedAndOffset) {
  const int64_t n = 10000;
  const std::vector<bool> base = dropout_mask(n, 0.5f, 7, 0);
  EXPECT_EQ(dropout_mask(n, 0.5f, 7, 0), base);
  EXPECT_GT(count_differences(dropout_mask(n, 0.5f, 7, 1), base), 4500);
  EXPECT_GT(count_differences(dropout_mask(n, 0.5f, 8, 0), base), 4500);
  EXPECT_GT(count_differences(dropout_mask(n, 0.5f, 7, uint64_t{1} << 32), base), 4500);
  EXPECT_GT(count_differences(dropout_mask(n, 0.5f, uint64_t{7} | (uint64_t{1} << 32), 0), base),
            4500);
  // Element i's decision depends on i alone, not on n: a shorter call is a prefix.
  const std::vector<bool> prefix = dropout_mask(777, 0.5f, 7, 0);
  EXPECT_EQ(prefix, std::vector<bool>(base.begin(), base.begin() + 777));
}

}  // namespace
}  // namespace pb::kernels
