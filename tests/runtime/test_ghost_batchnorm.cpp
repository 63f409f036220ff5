// Ghost batch norm through the runtime op (ops::batch_norm with virtual_batch_size), against a
// reference written here: plain loops for the forward and central differences of that forward
// for the gradients, so nothing is shared with the kernel under test.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/autograd/tape.h"
#include "runtime/ops/ops.h"

namespace pb {
namespace {

const TensorOptions kF64 = TensorOptions{}.with_dtype(DType::F64);

struct Dims {
  int64_t N, C, L;
};

// Batch norm of each group of V consecutive examples with its own statistics.
std::vector<double> reference_forward(const std::vector<double>& x, const std::vector<double>& g,
                                      const std::vector<double>& b, Dims d, int64_t V, double eps) {
  std::vector<double> y(x.size());
  for (int64_t g0 = 0; g0 < d.N; g0 += V) {
    for (int64_t c = 0; c < d.C; ++c) {
      auto at = [&](int64_t n, int64_t l) {
        return static_cast<std::size_t>((n * d.C + c) * d.L + l);
      };
      double mean = 0, var = 0;
      for (int64_t n = g0; n < g0 + V; ++n) {
        for (int64_t l = 0; l < d.L; ++l) mean += x[at(n, l)];
      }
      mean /= static_cast<double>(V * d.L);
      for (int64_t n = g0; n < g0 + V; ++n) {
        for (int64_t l = 0; l < d.L; ++l) var += (x[at(n, l)] - mean) * (x[at(n, l)] - mean);
      }
      var /= static_cast<double>(V * d.L);
      for (int64_t n = g0; n < g0 + V; ++n) {
        for (int64_t l = 0; l < d.L; ++l) {
          y[at(n, l)] =
              (x[at(n, l)] - mean) / std::sqrt(var + eps) * g[static_cast<std::size_t>(c)] +
              b[static_cast<std::size_t>(c)];
        }
      }
    }
  }
  return y;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d<ref(x, g, b), r>/d(which) by central differences.
std::vector<double> reference_grad(std::vector<double> x, std::vector<double> g,
                                   std::vector<double> b, Dims d, int64_t V, double eps,
                                   const std::vector<double>& r, int which) {
  std::vector<double>& v = which == 0 ? x : which == 1 ? g : b;
  std::vector<double> grad(v.size());
  constexpr double h = 1e-6;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double plus = dot(reference_forward(x, g, b, d, V, eps), r);
    v[i] = saved - h;
    const double minus = dot(reference_forward(x, g, b, d, V, eps), r);
    v[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

std::vector<double> random_vector(std::size_t n, Generator& gen, double mean = 0.0) {
  std::vector<double> v(n);
  for (double& e : v) e = mean + gen.normal();
  return v;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " element " << i;
  }
}

struct BnRun {
  std::vector<double> y, dx, dgamma, dbeta, running_mean, running_var;
};

BnRun run_op(const std::vector<double>& x, const std::vector<double>& g,
             const std::vector<double>& b, const std::vector<double>& r, Dims d, int64_t V,
             double momentum, double eps) {
  const Shape xs{d.N, d.C, d.L, 1};
  Tensor tx = from_vector<double>(x, xs, kF64).set_requires_grad(true);
  Tensor tg = from_vector<double>(g, {d.C}, kF64).set_requires_grad(true);
  Tensor tb = from_vector<double>(b, {d.C}, kF64).set_requires_grad(true);
  Tensor rm =
      from_vector<double>(std::vector<double>(static_cast<std::size_t>(d.C), 0.5), {d.C}, kF64);
  Tensor rv =
      from_vector<double>(std::vector<double>(static_cast<std::size_t>(d.C), 2.0), {d.C}, kF64);
  ops::BatchNormOptions o;
  o.virtual_batch_size = V;
  o.momentum = momentum;
  o.eps = eps;
  const Tensor y = ops::batch_norm(tx, tg, tb, rm, rv, o);
  autograd::backward(y, from_vector<double>(r, xs, kF64));
  return {y.to_vector<double>(),         tx.grad().to_vector<double>(),
          tg.grad().to_vector<double>(), tb.grad().to_vector<double>(),
          rm.to_vector<double>(),        rv.to_vector<double>()};
}

class GhostBatchNorm : public ::testing::Test {
 protected:
  Dims d{8, 3, 4};
  double eps = 1e-5, momentum = 0.1;
  Generator gen{2024};
  std::vector<double> x = random_vector(static_cast<std::size_t>(8 * 3 * 4), gen, 0.7);
  std::vector<double> gamma = random_vector(3, gen, 1.0);
  std::vector<double> beta = random_vector(3, gen);
  std::vector<double> r = random_vector(static_cast<std::size_t>(8 * 3 * 4), gen);
};

TEST_F(GhostBatchNorm, VirtualBatchAtLeastBatchIsOrdinaryBatchNormExactly) {
  const BnRun plain = run_op(x, gamma, beta, r, d, 0, momentum, eps);
  for (int64_t V : {d.N, d.N + 1, 4 * d.N}) {
    const BnRun ghost = run_op(x, gamma, beta, r, d, V, momentum, eps);
    EXPECT_EQ(ghost.y, plain.y) << "V=" << V;
    EXPECT_EQ(ghost.dx, plain.dx) << "V=" << V;
    EXPECT_EQ(ghost.dgamma, plain.dgamma) << "V=" << V;
    EXPECT_EQ(ghost.dbeta, plain.dbeta) << "V=" << V;
    EXPECT_EQ(ghost.running_mean, plain.running_mean) << "V=" << V;
    EXPECT_EQ(ghost.running_var, plain.running_var) << "V=" << V;
  }
  // And ordinary batch norm itself matches the reference with one group.
  expect_near(plain.y, reference_forward(x, gamma, beta, d, d.N, eps), 1e-10, "y (V=N)");
}

TEST_F(GhostBatchNorm, EachGroupIsNormalisedOnItsOwnInForwardAndBackward) {
  for (int64_t V : {1 * 2, 4}) {
    const BnRun ghost = run_op(x, gamma, beta, r, d, V, momentum, eps);
    expect_near(ghost.y, reference_forward(x, gamma, beta, d, V, eps), 1e-10, "y");
    expect_near(ghost.dx, reference_grad(x, gamma, beta, d, V, eps, r, 0), 1e-6, "dx");
    expect_near(ghost.dgamma, reference_grad(x, gamma, beta, d, V, eps, r, 1), 1e-6, "dgamma");
    expect_near(ghost.dbeta, reference_grad(x, gamma, beta, d, V, eps, r, 2), 1e-6, "dbeta");
    // The groups really differ from the whole batch: ghost output != ordinary output.
    const std::vector<double> whole = reference_forward(x, gamma, beta, d, d.N, eps);
    EXPECT_GT(std::abs(ghost.y[0] - whole[0]) + std::abs(ghost.y.back() - whole.back()), 1e-3);
  }
}

TEST_F(GhostBatchNorm, RunningStatisticsAreOneUpdateWithTheGroupAverage) {
  const int64_t V = 2, G = d.N / V, m = V * d.L;
  const BnRun ghost = run_op(x, gamma, beta, r, d, V, momentum, eps);
  for (int64_t c = 0; c < d.C; ++c) {
    double mean_of_means = 0, mean_of_vars = 0;
    for (int64_t g = 0; g < G; ++g) {
      double mean = 0, sq = 0;
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        for (int64_t l = 0; l < d.L; ++l)
          mean += x[static_cast<std::size_t>((n * d.C + c) * d.L + l)];
      }
      mean /= static_cast<double>(m);
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        for (int64_t l = 0; l < d.L; ++l) {
          const double e = x[static_cast<std::size_t>((n * d.C + c) * d.L + l)] - mean;
          sq += e * e;
        }
      }
      mean_of_means += mean / static_cast<double>(G);
      mean_of_vars += sq / static_cast<double>(m - 1) / static_cast<double>(G);  // unbiased
    }
    const auto i = static_cast<std::size_t>(c);
    EXPECT_NEAR(ghost.running_mean[i], (1 - momentum) * 0.5 + momentum * mean_of_means, 1e-12);
    EXPECT_NEAR(ghost.running_var[i], (1 - momentum) * 2.0 + momentum * mean_of_vars, 1e-12);
  }
}

TEST_F(GhostBatchNorm, BatchNotAMultipleOfTheVirtualBatchIsRejected) {
  ops::BatchNormOptions o;
  o.virtual_batch_size = 3;
  const Tensor t = zeros({8, 3, 2, 2}, kF64);
  try {
    ops::batch_norm(t, Tensor{}, Tensor{}, Tensor{}, Tensor{}, o);
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("batch of 8 examples is not a multiple of "
                                         "virtual_batch_size 3"),
              std::string::npos)
        << e.what();
  }
  // Eval mode uses running statistics: any batch size is fine.
  o.training = false;
  EXPECT_NO_THROW(ops::batch_norm(t, Tensor{}, Tensor{}, zeros({3}, kF64), ones({3}, kF64), o));
}

}  // namespace
}  // namespace pb
