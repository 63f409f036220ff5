// Batch norm / ghost batch norm CPU kernels: hand-computed values, finite-difference gradients,
// and the ghost-batch contract of kernels/batchnorm.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/elementwise.h"

namespace pb::kernels {
namespace {

std::vector<double> bn_random(int64_t n, uint32_t seed, double lo = -2.0, double hi = 2.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}

// Central differences of a scalar function of one buffer: df/dv_i ~ (f(v+h e_i) - f(v-h e_i))/2h.
std::vector<double> bn_finite_difference(std::vector<double>& v, const std::function<double()>& f,
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
class BatchNormCpuTyped : public ::testing::Test {};
using BatchNormScalarTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BatchNormCpuTyped, BatchNormScalarTypes);

// N=2, C=2, L=2 with eps = 0, laid out x[n][c][l]:
//   channel 0 values {-3, 3 | 3, 5}: mean 2, deviations {-5, 1, 1, 3}, biased var 36/4 = 9,
//     invstd 1/3, xhat {-5/3, 1/3, 1/3, 1}; gamma 2, beta 1 -> y {-7/3, 5/3, 5/3, 3}.
//     running (momentum 0.1, from 0 / 1): mean 0.1*2 = 0.2, var 0.9*1 + 0.1*(9*4/3) = 2.1.
//   channel 1 values {0, 0 | 2, 2}: mean 1, var 1, invstd 1, xhat {-1, -1, 1, 1};
//     gamma 1, beta -1 -> y {-2, -2, 0, 0}.
//     running: mean 0.1*1 = 0.1, var 0.9*1 + 0.1*(1*4/3) = 1.0333...
TYPED_TEST(BatchNormCpuTyped, ForwardTrainHandComputed) {
  using T = TypeParam;
  const BatchNormShape s{2, 2, 2, 2};
  const std::vector<T> x = {-3, 3, 0, 0, 3, 5, 2, 2};
  const std::vector<T> gamma = {2, 1}, beta = {1, -1};
  std::vector<T> y(8), mean(2), invstd(2);
  std::vector<T> rm = {0, 0}, rv = {1, 1};
  batchnorm_forward_train_cpu<T>(s, x.data(), gamma.data(), beta.data(), T(0), T(0.1), y.data(),
                                 mean.data(), invstd.data(), rm.data(), rv.data());
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  const double expected_y[8] = {-7.0 / 3, 5.0 / 3, -2, -2, 5.0 / 3, 3, 0, 0};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], expected_y[i], tol) << "i=" << i;
  EXPECT_NEAR(mean[0], 2.0, tol);
  EXPECT_NEAR(mean[1], 1.0, tol);
  EXPECT_NEAR(invstd[0], 1.0 / 3.0, tol);
  EXPECT_NEAR(invstd[1], 1.0, tol);
  EXPECT_NEAR(rm[0], 0.2, tol);
  EXPECT_NEAR(rm[1], 0.1, tol);
  EXPECT_NEAR(rv[0], 2.1, tol);
  EXPECT_NEAR(rv[1], 0.9 + 0.4 / 3.0, tol);
}

// Null gamma/beta mean scale 1, shift 0; null running buffers are simply not updated.
TYPED_TEST(BatchNormCpuTyped, ForwardTrainWithoutAffineOrRunningStats) {
  using T = TypeParam;
  const BatchNormShape s{2, 2, 2, 2};
  const std::vector<T> x = {-3, 3, 0, 0, 3, 5, 2, 2};
  std::vector<T> y(8), mean(2), invstd(2);
  batchnorm_forward_train_cpu<T>(s, x.data(), nullptr, nullptr, T(0), T(0.1), y.data(), mean.data(),
                                 invstd.data(), nullptr, nullptr);
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  const double expected_y[8] = {-5.0 / 3, 1.0 / 3, -1, -1, 1.0 / 3, 1, 1, 1};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], expected_y[i], tol) << "i=" << i;
}

// Float inputs with a large common offset: a one-pass E[x^2] - E[x]^2 in float would lose the
// variance entirely; the double two-pass statistics keep it.
TEST(BatchNormCpu, FloatStatisticsSurviveLargeMean) {
  const BatchNormShape s{4, 1, 1, 4};
  const std::vector<float> x = {10000.0f, 10002.0f, 10004.0f, 10006.0f};  // mean 10003, var 5
  std::vector<float> y(4), mean(1), invstd(1);
  batchnorm_forward_train_cpu<float>(s, x.data(), nullptr, nullptr, 0.0f, 0.1f, y.data(),
                                     mean.data(), invstd.data(), nullptr, nullptr);
  EXPECT_FLOAT_EQ(mean[0], 10003.0f);
  EXPECT_FLOAT_EQ(invstd[0], static_cast<float>(1.0 / std::sqrt(5.0)));
  EXPECT_NEAR(y[0], -3.0 / std::sqrt(5.0), 1e-6);
}

// Eval: rm = {1, -1}, rv = {3, 8}, eps = 1 -> invstd {1/2, 1/3}; gamma {2, 3}, beta {0, 1}.
//   channel 0: y = (x - 1) / 2 * 2 + 0 = x - 1;  channel 1: y = (x + 1) / 3 * 3 + 1 = x + 2.
// Backward: dx = dy * gamma * invstd = dy * {1, 1}; dgamma = sum dy * xhat; dbeta = sum dy.
TEST(BatchNormCpu, EvalForwardBackwardKnownValues) {
  const BatchNormShape s{2, 2, 1, 2};
  const std::vector<double> x = {5, 2, 3, -4};  // x[n][c]
  const std::vector<double> gamma = {2, 3}, beta = {0, 1}, rm = {1, -1}, rv = {3, 8};
  std::vector<double> y(4);
  batchnorm_forward_eval_cpu<double>(s, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(),
                                     1.0, y.data());
  EXPECT_DOUBLE_EQ(y[0], 4.0);
  EXPECT_DOUBLE_EQ(y[1], 4.0);
  EXPECT_DOUBLE_EQ(y[2], 2.0);
  EXPECT_DOUBLE_EQ(y[3], -2.0);

  const std::vector<double> dy = {1, 2, -3, 4};
  std::vector<double> dx(4), dgamma(2), dbeta(2);
  batchnorm_backward_eval_cpu<double>(s, x.data(), dy.data(), gamma.data(), rm.data(), rv.data(),
                                      1.0, dx.data(), dgamma.data(), dbeta.data());
  EXPECT_DOUBLE_EQ(dx[0], 1.0);   // 1 * 2 / 2
  EXPECT_DOUBLE_EQ(dx[1], 2.0);   // 2 * 3 / 3
  EXPECT_DOUBLE_EQ(dx[2], -3.0);  // -3 * 2 / 2
  EXPECT_DOUBLE_EQ(dx[3], 4.0);   // 4 * 3 / 3
  // xhat: channel 0 {(5-1)/2, (3-1)/2} = {2, 1}; channel 1 {(2+1)/3, (-4+1)/3} = {1, -1}.
  EXPECT_DOUBLE_EQ(dgamma[0], 1.0 * 2 + -3.0 * 1);  // -1
  EXPECT_DOUBLE_EQ(dgamma[1], 2.0 * 1 + 4.0 * -1);  // -2
  EXPECT_DOUBLE_EQ(dbeta[0], -2.0);
  EXPECT_DOUBLE_EQ(dbeta[1], 6.0);
}

// Objective f = sum(y * r) so that dy = r; compare every analytic gradient with central
// differences in double, for ordinary (V = N) and ghost (V < N) batch norm, train and eval.
void check_train_gradients(const BatchNormShape& s) {
  const int64_t count = s.N * s.C * s.L;
  std::vector<double> x = bn_random(count, 1), r = bn_random(count, 2);
  std::vector<double> gamma = bn_random(s.C, 3, 0.5, 1.5), beta = bn_random(s.C, 4);
  const double eps = 1e-3;
  const int64_t stats = s.groups() * s.C;
  std::vector<double> y(count), mean(stats), invstd(stats);
  auto objective = [&]() {
    batchnorm_forward_train_cpu<double>(s, x.data(), gamma.data(), beta.data(), eps, 0.1, y.data(),
                                        mean.data(), invstd.data(), nullptr, nullptr);
    double f = 0.0;
    for (int64_t i = 0; i < count; ++i) f += y[i] * r[i];
    return f;
  };
  objective();  // fills mean/invstd at the unperturbed point
  std::vector<double> dx(count), dgamma(s.C), dbeta(s.C);
  batchnorm_backward_train_cpu<double>(s, x.data(), r.data(), gamma.data(), mean.data(),
                                       invstd.data(), dx.data(), dgamma.data(), dbeta.data());
  const std::vector<double> fd_x = bn_finite_difference(x, objective);
  const std::vector<double> fd_gamma = bn_finite_difference(gamma, objective);
  const std::vector<double> fd_beta = bn_finite_difference(beta, objective);
  // Central differences with h = 1e-6 on O(1) values: truncation ~h^2, rounding ~1e-16/h.
  for (int64_t i = 0; i < count; ++i) EXPECT_NEAR(dx[i], fd_x[i], 1e-7) << "dx i=" << i;
  for (int64_t c = 0; c < s.C; ++c) {
    EXPECT_NEAR(dgamma[c], fd_gamma[c], 1e-7) << "dgamma c=" << c;
    EXPECT_NEAR(dbeta[c], fd_beta[c], 1e-7) << "dbeta c=" << c;
  }
}

TEST(BatchNormCpu, TrainBackwardMatchesFiniteDifferences) {
  check_train_gradients({3, 2, 4, 3});  // one group
  check_train_gradients({6, 3, 2, 2});  // three ghost groups of two
  check_train_gradients({4, 2, 1, 4});  // (N,C) input, L = 1
}

TEST(BatchNormCpu, EvalBackwardMatchesFiniteDifferences) {
  const BatchNormShape s{3, 2, 5, 3};
  const int64_t count = s.N * s.C * s.L;
  std::vector<double> x = bn_random(count, 5), r = bn_random(count, 6);
  std::vector<double> gamma = bn_random(s.C, 7, 0.5, 1.5), beta = bn_random(s.C, 8);
  const std::vector<double> rm = {0.3, -0.2}, rv = {1.7, 0.4};
  std::vector<double> y(count);
  auto objective = [&]() {
    batchnorm_forward_eval_cpu<double>(s, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(),
                                       1e-5, y.data());
    double f = 0.0;
    for (int64_t i = 0; i < count; ++i) f += y[i] * r[i];
    return f;
  };
  std::vector<double> dx(count), dgamma(s.C), dbeta(s.C);
  batchnorm_backward_eval_cpu<double>(s, x.data(), r.data(), gamma.data(), rm.data(), rv.data(),
                                      1e-5, dx.data(), dgamma.data(), dbeta.data());
  const std::vector<double> fd_x = bn_finite_difference(x, objective);
  const std::vector<double> fd_gamma = bn_finite_difference(gamma, objective);
  const std::vector<double> fd_beta = bn_finite_difference(beta, objective);
  for (int64_t i = 0; i < count; ++i) EXPECT_NEAR(dx[i], fd_x[i], 1e-7) << "dx i=" << i;
  for (int64_t c = 0; c < s.C; ++c) {
    EXPECT_NEAR(dgamma[c], fd_gamma[c], 1e-7) << "dgamma c=" << c;
    EXPECT_NEAR(dbeta[c], fd_beta[c], 1e-7) << "dbeta c=" << c;
  }
}

// Ghost batch norm with V < N: each group behaves exactly like a lone V = N call on its slice
// (forward output, saved statistics and dx bit for bit), dgamma/dbeta are the sums of the
// per-slice ones, and the running statistics follow the header's formula.
TYPED_TEST(BatchNormCpuTyped, GhostGroupsEqualPerSliceCalls) {
  using T = TypeParam;
  const int64_t N = 6, C = 3, L = 4, V = 2, G = N / V;
  const BatchNormShape s{N, C, L, V};
  const int64_t count = N * C * L, slice = V * C * L;
  std::vector<T> x(count), dy(count), gamma(C), beta(C);
  {
    const std::vector<double> xd = bn_random(count, 11, -1.0, 3.0), dyd = bn_random(count, 12);
    const std::vector<double> gd = bn_random(C, 13, 0.5, 1.5), bd = bn_random(C, 14);
    for (int64_t i = 0; i < count; ++i)
      x[i] = static_cast<T>(xd[i]), dy[i] = static_cast<T>(dyd[i]);
    for (int64_t c = 0; c < C; ++c)
      gamma[c] = static_cast<T>(gd[c]), beta[c] = static_cast<T>(bd[c]);
  }
  const T eps = T(1e-5), momentum = T(0.25);
  const std::vector<T> rm0 = {T(0.5), T(-1), T(2)}, rv0 = {T(1), T(3), T(0.5)};

  std::vector<T> y(count), mean(G * C), invstd(G * C), rm = rm0, rv = rv0;
  batchnorm_forward_train_cpu<T>(s, x.data(), gamma.data(), beta.data(), eps, momentum, y.data(),
                                 mean.data(), invstd.data(), rm.data(), rv.data());
  std::vector<T> dx(count), dgamma(C), dbeta(C);
  batchnorm_backward_train_cpu<T>(s, x.data(), dy.data(), gamma.data(), mean.data(), invstd.data(),
                                  dx.data(), dgamma.data(), dbeta.data());

  const BatchNormShape one{V, C, L, V};
  std::vector<double> dgamma_sum(C, 0.0), dbeta_sum(C, 0.0);
  for (int64_t g = 0; g < G; ++g) {
    std::vector<T> ys(slice), ms(C), is(C), dxs(slice), dgs(C), dbs(C);
    batchnorm_forward_train_cpu<T>(one, x.data() + g * slice, gamma.data(), beta.data(), eps,
                                   momentum, ys.data(), ms.data(), is.data(), nullptr, nullptr);
    batchnorm_backward_train_cpu<T>(one, x.data() + g * slice, dy.data() + g * slice, gamma.data(),
                                    ms.data(), is.data(), dxs.data(), dgs.data(), dbs.data());
    for (int64_t i = 0; i < slice; ++i) {
      EXPECT_EQ(y[g * slice + i], ys[i]) << "g=" << g << " i=" << i;
      EXPECT_EQ(dx[g * slice + i], dxs[i]) << "g=" << g << " i=" << i;
    }
    for (int64_t c = 0; c < C; ++c) {
      EXPECT_EQ(mean[g * C + c], ms[c]);
      EXPECT_EQ(invstd[g * C + c], is[c]);
      dgamma_sum[c] += dgs[c];
      dbeta_sum[c] += dbs[c];
    }
  }
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(dgamma[c], dgamma_sum[c], tol) << "c=" << c;
    EXPECT_NEAR(dbeta[c], dbeta_sum[c], tol) << "c=" << c;
  }

  // Running statistics from the header, recomputed here from the data in double:
  //   rm <- (1 - momentum) rm + momentum * mean_g(mean_g)
  //   rv <- (1 - momentum) rv + momentum * mean_g(var_g * m / (m - 1)),  m = V * L.
  const double m = static_cast<double>(V * L), mom = static_cast<double>(momentum);
  for (int64_t c = 0; c < C; ++c) {
    double mean_of_means = 0.0, mean_of_vars = 0.0;
    for (int64_t g = 0; g < G; ++g) {
      double sum = 0.0, sq = 0.0;
      for (int64_t n = g * V; n < (g + 1) * V; ++n)
        for (int64_t l = 0; l < L; ++l) sum += x[(n * C + c) * L + l];
      const double mu = sum / m;
      for (int64_t n = g * V; n < (g + 1) * V; ++n)
        for (int64_t l = 0; l < L; ++l)
          sq += (x[(n * C + c) * L + l] - mu) * (x[(n * C + c) * L + l] - mu);
      mean_of_means += mu / G;
      mean_of_vars += sq / m * m / (m - 1) / G;
    }
    const double expected_rm = (1 - mom) * rm0[c] + mom * mean_of_means;
    const double expected_rv = (1 - mom) * rv0[c] + mom * mean_of_vars;
    const double stol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
    EXPECT_NEAR(rm[c], expected_rm, stol * (1 + std::abs(expected_rm))) << "c=" << c;
    EXPECT_NEAR(rv[c], expected_rv, stol * (1 + std::abs(expected_rv))) << "c=" << c;
  }
}

// V >= N is ordinary batch norm on the same code path: V = N, V = N + 1 and a huge V agree
// bitwise in every output.
TYPED_TEST(BatchNormCpuTyped, VirtualBatchAtLeastNIsOrdinaryBatchNorm) {
  using T = TypeParam;
  const int64_t N = 5, C = 2, L = 3, count = N * C * L;
  std::vector<T> x(count), dy(count);
  const std::vector<double> xd = bn_random(count, 21), dyd = bn_random(count, 22);
  for (int64_t i = 0; i < count; ++i) x[i] = static_cast<T>(xd[i]), dy[i] = static_cast<T>(dyd[i]);
  const std::vector<T> gamma = {T(1.5), T(0.5)}, beta = {T(0.1), T(-0.2)};

  struct Result {
    std::vector<T> y, mean, invstd, rm, rv, dx, dgamma, dbeta;
  };
  auto run = [&](int64_t V) {
    const BatchNormShape s{N, C, L, V};
    Result r{std::vector<T>(count), std::vector<T>(C),     std::vector<T>(C), {T(0.1), T(0.2)},
             {T(1.1), T(0.9)},      std::vector<T>(count), std::vector<T>(C), std::vector<T>(C)};
    batchnorm_forward_train_cpu<T>(s, x.data(), gamma.data(), beta.data(), T(1e-5), T(0.1),
                                   r.y.data(), r.mean.data(), r.invstd.data(), r.rm.data(),
                                   r.rv.data());
    batchnorm_backward_train_cpu<T>(s, x.data(), dy.data(), gamma.data(), r.mean.data(),
                                    r.invstd.data(), r.dx.data(), r.dgamma.data(), r.dbeta.data());
    return r;
  };
  const Result base = run(N);
  for (int64_t V : {N + 1, int64_t{1} << 40}) {
    const Result r = run(V);
    EXPECT_EQ(r.y, base.y) << "V=" << V;
    EXPECT_EQ(r.mean, base.mean) << "V=" << V;
    EXPECT_EQ(r.invstd, base.invstd) << "V=" << V;
    EXPECT_EQ(r.rm, base.rm) << "V=" << V;
    EXPECT_EQ(r.rv, base.rv) << "V=" << V;
    EXPECT_EQ(r.dx, base.dx) << "V=" << V;
    EXPECT_EQ(r.dgamma, base.dgamma) << "V=" << V;
    EXPECT_EQ(r.dbeta, base.dbeta) << "V=" << V;
  }
}

// Fused batch norm + ReLU is the unfused pair, bit for bit: the train forward (y, saved and
// running statistics), the eval forward, and both backward passes given the fused output y (dy
// masked by y > 0, then the ordinary backward), for one group, ghost groups and L = 1.
TYPED_TEST(BatchNormCpuTyped, FusedReluEqualsUnfused) {
  using T = TypeParam;
  for (const BatchNormShape s :
       {BatchNormShape{6, 3, 5, 2}, BatchNormShape{5, 2, 7, 5}, BatchNormShape{4, 2, 1, 4}}) {
    const int64_t count = s.N * s.C * s.L, stats = s.groups() * s.C;
    std::vector<T> x(count), dy(count), gamma(s.C), beta(s.C);
    const std::vector<double> xd = bn_random(count, 31, -1.0, 3.0), dyd = bn_random(count, 32);
    const std::vector<double> gd = bn_random(s.C, 33, 0.5, 1.5), bd = bn_random(s.C, 34, -0.5, 0.5);
    for (int64_t i = 0; i < count; ++i)
      x[i] = static_cast<T>(xd[i]), dy[i] = static_cast<T>(dyd[i]);
    for (int64_t c = 0; c < s.C; ++c)
      gamma[c] = static_cast<T>(gd[c]), beta[c] = static_cast<T>(bd[c]);
    const T eps = T(1e-5), momentum = T(0.1);

    // Train forward.
    std::vector<T> y(count), y_relu(count), m1(stats), i1(stats), m2(stats), i2(stats);
    std::vector<T> rm1(s.C, T(0.2)), rv1(s.C, T(1.5)), rm2 = rm1, rv2 = rv1, y_fused(count);
    batchnorm_forward_train_cpu<T>(s, x.data(), gamma.data(), beta.data(), eps, momentum, y.data(),
                                   m1.data(), i1.data(), rm1.data(), rv1.data());
    relu_forward_cpu<T>(count, y.data(), y_relu.data());
    batchnorm_relu_forward_train_cpu<T>(s, x.data(), gamma.data(), beta.data(), eps, momentum,
                                        y_fused.data(), m2.data(), i2.data(), rm2.data(),
                                        rv2.data());
    EXPECT_EQ(y_fused, y_relu);
    EXPECT_EQ(m2, m1);
    EXPECT_EQ(i2, i1);
    EXPECT_EQ(rm2, rm1);
    EXPECT_EQ(rv2, rv1);
    int64_t clipped = 0;
    for (const T v : y_fused) clipped += v == T(0) ? 1 : 0;
    EXPECT_GT(clipped, 0);      // the mask matters ...
    EXPECT_LT(clipped, count);  // ... and is not all-zero

    // Train backward through the fused output.
    std::vector<T> dy_masked(count), dx1(count), dx2(count), dg1(s.C), db1(s.C), dg2(s.C), db2(s.C);
    relu_backward_cpu<T>(count, y_fused.data(), dy.data(), dy_masked.data());
    batchnorm_backward_train_cpu<T>(s, x.data(), dy_masked.data(), gamma.data(), m1.data(),
                                    i1.data(), dx1.data(), dg1.data(), db1.data());
    batchnorm_relu_backward_train_cpu<T>(s, x.data(), y_fused.data(), dy.data(), gamma.data(),
                                         m2.data(), i2.data(), dx2.data(), dg2.data(), db2.data());
    EXPECT_EQ(dx2, dx1);
    EXPECT_EQ(dg2, dg1);
    EXPECT_EQ(db2, db1);

    // Eval forward and backward.
    std::vector<T> ye(count), ye_relu(count), ye_fused(count);
    batchnorm_forward_eval_cpu<T>(s, x.data(), gamma.data(), beta.data(), rm1.data(), rv1.data(),
                                  eps, ye.data());
    relu_forward_cpu<T>(count, ye.data(), ye_relu.data());
    batchnorm_relu_forward_eval_cpu<T>(s, x.data(), gamma.data(), beta.data(), rm1.data(),
                                       rv1.data(), eps, ye_fused.data());
    EXPECT_EQ(ye_fused, ye_relu);
    relu_backward_cpu<T>(count, ye_fused.data(), dy.data(), dy_masked.data());
    batchnorm_backward_eval_cpu<T>(s, x.data(), dy_masked.data(), gamma.data(), rm1.data(),
                                   rv1.data(), eps, dx1.data(), dg1.data(), db1.data());
    batchnorm_relu_backward_eval_cpu<T>(s, x.data(), ye_fused.data(), dy.data(), gamma.data(),
                                        rm1.data(), rv1.data(), eps, dx2.data(), dg2.data(),
                                        db2.data());
    EXPECT_EQ(dx2, dx1);
    EXPECT_EQ(dg2, dg1);
    EXPECT_EQ(db2, db1);
  }
}

}  // namespace
}  // namespace pb::kernels
