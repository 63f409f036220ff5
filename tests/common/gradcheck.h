#pragma once
// A generic finite-difference gradient checker (central differences, double precision).
//
// For an op f with inputs x_1..x_n and a fixed random projection r of its output, the scalar
// L = <f(x), r> has dL/dx_i = J_i^T r, which autograd computes with one backward seeded by r.
// Each element of each checked input is then perturbed by +-h and
// (L(x + h e_j) - L(x - h e_j)) / 2h is compared with the analytic value.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "runtime/autograd/tape.h"
#include "runtime/core/tensor.h"

namespace pb::testing {

struct GradcheckOptions {
  double step = 1e-6;
  double atol = 1e-8;
  double rtol = 1e-6;
};

// L = <y, r> evaluated on the host in double.
inline double project(const Tensor& y, const std::vector<double>& r) {
  const std::vector<double> v = y.to_vector<double>();
  double s = 0;
  for (std::size_t i = 0; i < v.size(); ++i) s += v[i] * r[i];
  return s;
}

// Checks d<f(inputs), r>/d inputs[i] for every i in `check` (each must require grad).
// Returns the number of elements compared (so callers can assert the check did something).
inline int64_t gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                         const std::vector<Tensor>& inputs, const std::vector<int>& check,
                         uint64_t seed, const std::string& label,
                         const GradcheckOptions& options = {}) {
  for (const Tensor& t : inputs) t.set_grad(Tensor{});
  Tensor y = f(inputs);
  Generator gen(seed);
  std::vector<double> r(static_cast<std::size_t>(y.numel()));
  for (double& v : r) v = gen.normal();
  autograd::backward(y, from_vector<double>(r, y.shape()));

  int64_t compared = 0;
  autograd::NoGradGuard no_grad;
  for (const int i : check) {
    const Tensor& x = inputs[static_cast<std::size_t>(i)];
    EXPECT_TRUE(x.requires_grad()) << label << ": input " << i << " does not require grad";
    const Tensor g = x.grad();
    if (!g.defined()) {
      ADD_FAILURE() << label << ": input " << i << " received no gradient";
      continue;
    }
    const std::vector<double> analytic = g.to_vector<double>();
    double* xp = x.data<double>();
    for (int64_t j = 0; j < x.numel(); ++j) {
      const double saved = xp[j];
      xp[j] = saved + options.step;
      const double plus = project(f(inputs), r);
      xp[j] = saved - options.step;
      const double minus = project(f(inputs), r);
      xp[j] = saved;
      const double numeric = (plus - minus) / (2 * options.step);
      const double a = analytic[static_cast<std::size_t>(j)];
      EXPECT_NEAR(a, numeric, options.atol + options.rtol * std::abs(numeric))
          << label << ": d/d input " << i << " element " << j;
      ++compared;
    }
  }
  return compared;
}

}  // namespace pb::testing
