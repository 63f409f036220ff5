// Layer norm CPU kernels: hand-computed forward values and finite-difference gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/layernorm.h"

namespace pb::kernels {
namespace {

std::vector<double> ln_random(int64_t n, uint32_t seed, double lo = -2.0, double hi = 2.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}

// Central differences of a scalar function of one buffer.
std::vector<double> ln_finite_difference(std::vector<double>& v, const std::function<double()>& f,
                                         double h = 1e-6) {
  std::vector<double> grad(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double fp = f();
    v[i] = saved - h;
    const double fm = f();
    v[i] = saved;
    grad[i] = (fp - fm) / (2.0 * h);
  }
  return grad;
}

template <typename T>
class LayerNormCpuTyped : public ::testing::Test {};
using LayerNormScalarTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LayerNormCpuTyped, LayerNormScalarTypes);

// M=2, D=4, eps = 0:
//   row 0 {-3, 3, 3, 5}: mean 2, deviations {-5, 1, 1, 3}, var 36/4 = 9, invstd 1/3,
//     xhat {-5/3, 1/3, 1/3, 1}.
//   row 1 {0, 0, 2, 2}: mean 1, var 1, invstd 1, xhat {-1, -1, 1, 1}.
//   gamma {1, 2, 3, 4}, beta {0, 1, 0, -1}: y = xhat * gamma + beta per column:
//     row 0 {-5/3, 5/3, 1, 3};  row 1 {-1, -1, 3, 3}.
TYPED_TEST(LayerNormCpuTyped, ForwardHandComputed) {
  using T = TypeParam;
  const std::vector<T> x = {-3, 3, 3, 5, 0, 0, 2, 2};
  const std::vector<T> gamma = {1, 2, 3, 4}, beta = {0, 1, 0, -1};
  std::vector<T> y(8), mean(2), invstd(2);
  layernorm_forward_cpu<T>(2, 4, x.data(), gamma.data(), beta.data(), T(0), y.data(), mean.data(),
                           invstd.data());
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  const double expected[8] = {-5.0 / 3, 5.0 / 3, 1, 3, -1, -1, 3, 3};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], expected[i], tol) << "i=" << i;
  EXPECT_NEAR(mean[0], 2.0, tol);
  EXPECT_NEAR(mean[1], 1.0, tol);
  EXPECT_NEAR(invstd[0], 1.0 / 3.0, tol);
  EXPECT_NEAR(invstd[1], 1.0, tol);

  // Without gamma/beta the output is xhat itself.
  layernorm_forward_cpu<T>(2, 4, x.data(), nullptr, nullptr, T(0), y.data(), mean.data(),
                           invstd.data());
  const double xhat[8] = {-5.0 / 3, 1.0 / 3, 1.0 / 3, 1, -1, -1, 1, 1};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], xhat[i], tol) << "i=" << i;
}

// eps enters as 1/sqrt(var + eps): a constant row has var 0 and gives y = beta, not NaN.
TEST(LayerNormCpu, ConstantRowUsesEps) {
  const std::vector<double> x = {7, 7, 7}, beta = {1, 2, 3};
  std::vector<double> y(3), mean(1), invstd(1);
  layernorm_forward_cpu<double>(1, 3, x.data(), nullptr, beta.data(), 0.25, y.data(), mean.data(),
                                invstd.data());
  EXPECT_DOUBLE_EQ(mean[0], 7.0);
  EXPECT_DOUBLE_EQ(invstd[0], 2.0);  // 1/sqrt(0 + 0.25)
  EXPECT_DOUBLE_EQ(y[0], 1.0);
  EXPECT_DOUBLE_EQ(y[1], 2.0);
  EXPECT_DOUBLE_EQ(y[2], 3.0);
}

// Objective f = sum(y * r), so dy = r; every gradient against central differences in double.
TEST(LayerNormCpu, BackwardMatchesFiniteDifferences) {
  const int64_t M = 3, D = 5;
  std::vector<double> x = ln_random(M * D, 1), r = ln_random(M * D, 2);
  std::vector<double> gamma = ln_random(D, 3, 0.5, 1.5), beta = ln_random(D, 4);
  std::vector<double> y(M * D), mean(M), invstd(M);
  auto objective = [&]() {
    layernorm_forward_cpu<double>(M, D, x.data(), gamma.data(), beta.data(), 1e-3, y.data(),
                                  mean.data(), invstd.data());
    double f = 0.0;
    for (int64_t i = 0; i < M * D; ++i) f += y[i] * r[i];
    return f;
  };
  objective();
  std::vector<double> dx(M * D), dgamma(D), dbeta(D);
  layernorm_backward_cpu<double>(M, D, x.data(), r.data(), gamma.data(), mean.data(), invstd.data(),
                                 dx.data(), dgamma.data(), dbeta.data());
  const std::vector<double> fd_x = ln_finite_difference(x, objective);
  const std::vector<double> fd_gamma = ln_finite_difference(gamma, objective);
  const std::vector<double> fd_beta = ln_finite_difference(beta, objective);
  // h = 1e-6 on O(1) values: truncation ~1e-12, rounding ~1e-10.
  for (int64_t i = 0; i < M * D; ++i) EXPECT_NEAR(dx[i], fd_x[i], 1e-7) << "i=" << i;
  for (int64_t j = 0; j < D; ++j) {
    EXPECT_NEAR(dgamma[j], fd_gamma[j], 1e-7) << "j=" << j;
    EXPECT_NEAR(dbeta[j], fd_beta[j], 1e-7) << "j=" << j;
  }

  // Null gamma behaves as gamma = 1; null dgamma/dbeta are skipped.
  std::vector<double> dx_plain(M * D), dx_ones(M * D), dgamma_ones(D), dbeta_ones(D);
  const std::vector<double> ones(D, 1.0);
  layernorm_forward_cpu<double>(M, D, x.data(), nullptr, nullptr, 1e-3, y.data(), mean.data(),
                                invstd.data());
  layernorm_backward_cpu<double>(M, D, x.data(), r.data(), nullptr, mean.data(), invstd.data(),
                                 dx_plain.data(), nullptr, nullptr);
  layernorm_backward_cpu<double>(M, D, x.data(), r.data(), ones.data(), mean.data(), invstd.data(),
                                 dx_ones.data(), dgamma_ones.data(), dbeta_ones.data());
  EXPECT_EQ(dx_plain, dx_ones);
}

}  // namespace
}  // namespace pb::kernels
