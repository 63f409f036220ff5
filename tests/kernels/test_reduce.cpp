// Reduction CPU kernels: sum, mean and the global L2 norm of several tensors, hand-computed and
// against a float sum that would lose the small terms.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

TEST(ReduceCpu, SumAndMeanHandComputed) {
  const std::vector<double> x = {1.5, -2.0, 4.0, 0.25};  // sum 3.75, mean 0.9375
  double out = -1.0;
  sum_cpu<double>(4, x.data(), &out);
  EXPECT_EQ(out, 3.75);
  mean_cpu<double>(4, x.data(), &out);
  EXPECT_EQ(out, 0.9375);

  const std::vector<float> xf = {1.5f, -2.0f, 4.0f, 0.25f};
  float outf = -1.0f;
  sum_cpu<float>(4, xf.data(), &outf);
  EXPECT_EQ(outf, 3.75f);
  mean_cpu<float>(4, xf.data(), &outf);
  EXPECT_EQ(outf, 0.9375f);
}

// An empty sum is 0 and an empty mean is 0 (as an empty MSE); the input is never read.
TEST(ReduceCpu, EmptyInputs) {
  float out = -1.0f;
  sum_cpu<float>(0, nullptr, &out);
  EXPECT_EQ(out, 0.0f);
  out = -1.0f;
  mean_cpu<float>(0, nullptr, &out);
  EXPECT_EQ(out, 0.0f);
  out = -1.0f;
  global_l2_norm_cpu<float>(0, nullptr, nullptr, &out);
  EXPECT_EQ(out, 0.0f);
}

// Double accumulation for float inputs: 2^24 + 8 ones would stall at 2^24 in a float sum.
TEST(ReduceCpu, FloatSumAccumulatesInDouble) {
  std::vector<float> x(1, 16777216.0f);  // 2^24
  x.resize(9, 1.0f);
  float out = 0.0f;
  sum_cpu<float>(9, x.data(), &out);
  EXPECT_EQ(out, 16777224.0f);  // 2^24 + 8, exactly representable
}

// Three tensors {3, 4}, {}, {12}: the norm of the concatenation is sqrt(9 + 16 + 144) = 13.
TEST(ReduceCpu, GlobalL2NormOfSeveralTensors) {
  const std::vector<double> a = {3.0, 4.0}, c = {12.0};
  const double* ptrs[] = {a.data(), nullptr, c.data()};
  const int64_t sizes[] = {2, 0, 1};
  double out = -1.0;
  global_l2_norm_cpu<double>(3, ptrs, sizes, &out);
  EXPECT_EQ(out, 13.0);

  const std::vector<float> af = {3.0f, 4.0f}, cf = {12.0f};
  const float* fptrs[] = {af.data(), nullptr, cf.data()};
  float outf = -1.0f;
  global_l2_norm_cpu<float>(3, fptrs, sizes, &outf);
  EXPECT_EQ(outf, 13.0f);
}

}  // namespace
}  // namespace pb::kernels
