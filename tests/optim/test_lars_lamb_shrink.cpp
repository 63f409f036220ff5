// LARS and LAMB when the list of parameters with a gradient changes from step to step: a
// parameter without a gradient is left out of the update (it keeps its value and its state), so
// a step may update fewer tensors than an earlier one, then more again. Every parameter and every
// slot is compared after every step with an independent double-precision computation of the
// rules, written here from the papers' formulas (kernels/optim.h): per-tensor ("layer-wise")
// norms of this step's values, the optimizer's shared step count t for LAMB's bias corrections,
// and no trust ratio and no decay for the excluded tensors ("*.bias").
//
// The CUDA kernel once kept its norm counters at an offset that depends on the list's length, so
// a shorter list read stale partial sums as counters and its trust ratios were silently wrong;
// tests/cuda/test_optim_cuda.cpp (OptimCudaShrinkingList) runs this scenario CPU vs CUDA. The CPU
// kernel computes each tensor's norms in its own loop and never had that bug; this test pins the
// rule that both backends must match.
//
// Tolerance: the optimizer runs in double too; only the rounding order differs, so 1e-12
// relative (as in test_update_rules.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"
#include "runtime/optim/optimizer.h"

namespace pb::optim {
namespace {

using Vec = std::vector<double>;

TensorOptions f64() {
  return TensorOptions{}.with_dtype(DType::F64);
}

// Four tensors of different sizes and scales (so that any mix-up of norms between tensors
// shows); tensor 2 is a bias: excluded from weight decay and from the trust ratio.
const std::vector<std::string> kNames = {"a.weight", "b.weight", "b.bias", "c.weight"};
const std::vector<int64_t> kSizes = {6, 3, 4, 5};
const Vec kThetaScale = {1.0, 0.1, 0.5, 3.0};
const Vec kGradScale = {0.01, 1.0, 0.2, 0.05};

// Which tensors have a gradient at each step: all, then shrinking and growing lists.
const std::vector<std::vector<int>> kHasGrad = {{0, 1, 2, 3}, {1, 3},    {0, 2},      {0, 1, 2, 3},
                                                {2},          {0, 1, 3}, {0, 1, 2, 3}};
const Vec kLr = {0.5, 0.4, 0.45, 0.3, 0.35, 0.25, 0.2};  // multiplied by each test's base lr
// A gradient scale (clipping) on some steps; 0 means none.
const Vec kGradScaleArg = {0.0, 0.0, 0.5, 0.0, 0.0, 0.8, 0.0};

Vec initial_theta(int p) {
  Vec v(static_cast<std::size_t>(kSizes[p]));
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = kThetaScale[p] * std::sin(1.3 * static_cast<double>(i) + 0.7 * p + 0.4);
  }
  return v;
}

Vec gradient(int p, int step) {
  Vec v(static_cast<std::size_t>(kSizes[p]));
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = kGradScale[p] * std::cos(0.9 * static_cast<double>(i) + 1.1 * step + 0.3 * p + 0.2);
  }
  return v;
}

double norm(const Vec& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

bool has_grad(int step, int p) {
  for (int q : kHasGrad[step]) {
    if (q == p) return true;
  }
  return false;
}

struct Hyper {
  double lr = 0.0, momentum = 0.0, beta1 = 0.0, beta2 = 0.0, eps = 0.0, wd = 0.0, trust = 0.0;
};

// The reference state: theta and the slots of every tensor.
struct State {
  std::vector<Vec> theta, s0, s1;
};

State initial_state() {
  State s;
  for (int p = 0; p < 4; ++p) {
    s.theta.push_back(initial_theta(p));
    s.s0.emplace_back(s.theta.back().size(), 0.0);
    s.s1.emplace_back(s.theta.back().size(), 0.0);
  }
  return s;
}

bool excluded(int p) {
  return kNames[p].ends_with(".bias");
}

// You, Gitman & Ginsburg 2017 with momentum (the MLPerf reference):
//   tau = eta ||theta|| / (||g|| + wd ||theta|| + eps)   (1 for an excluded tensor or a 0 norm)
//   v <- gamma v + lr tau (g + wd theta);  theta <- theta - v
void lars_reference_step(State& s, int step, const Hyper& h) {
  const double lr = h.lr * kLr[step];
  const double scale = kGradScaleArg[step] > 0.0 ? kGradScaleArg[step] : 1.0;
  for (int p = 0; p < 4; ++p) {
    if (!has_grad(step, p)) continue;
    Vec g = gradient(p, step);
    for (double& x : g) x *= scale;
    const double wd = excluded(p) ? 0.0 : h.wd;
    const double pn = norm(s.theta[p]), gn = norm(g);
    const double tau =
        excluded(p) || pn == 0.0 || gn == 0.0 ? 1.0 : h.trust * pn / (gn + wd * pn + h.eps);
    for (std::size_t i = 0; i < g.size(); ++i) {
      s.s0[p][i] = h.momentum * s.s0[p][i] + lr * tau * (g[i] + wd * s.theta[p][i]);
      s.theta[p][i] -= s.s0[p][i];
    }
  }
}

// You et al. 2019, Algorithm 2 (phi = identity), t = the optimizer's step count:
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  m^ = m / (1 - b1^t);  v^ = v / (1 - b2^t)
//   r = m^ / (sqrt(v^) + eps) + wd theta;  tau = ||theta|| / ||r||;  theta <- theta - lr tau r
void lamb_reference_step(State& s, int step, const Hyper& h) {
  const double lr = h.lr * kLr[step];
  const double scale = kGradScaleArg[step] > 0.0 ? kGradScaleArg[step] : 1.0;
  const int t = step + 1;
  for (int p = 0; p < 4; ++p) {
    if (!has_grad(step, p)) continue;
    Vec g = gradient(p, step);
    for (double& x : g) x *= scale;
    const double wd = excluded(p) ? 0.0 : h.wd;
    Vec r(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      s.s0[p][i] = h.beta1 * s.s0[p][i] + (1.0 - h.beta1) * g[i];
      s.s1[p][i] = h.beta2 * s.s1[p][i] + (1.0 - h.beta2) * g[i] * g[i];
      const double mhat = s.s0[p][i] / (1.0 - std::pow(h.beta1, t));
      const double vhat = s.s1[p][i] / (1.0 - std::pow(h.beta2, t));
      r[i] = mhat / (std::sqrt(vhat) + h.eps) + wd * s.theta[p][i];
    }
    const double pn = norm(s.theta[p]), rn = norm(r);
    const double tau = excluded(p) || pn == 0.0 || rn == 0.0 ? 1.0 : pn / rn;
    for (std::size_t i = 0; i < g.size(); ++i) s.theta[p][i] -= lr * tau * r[i];
  }
}

void expect_close(const Vec& got, const Vec& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i])))
        << what << " element " << i;
  }
}

// Runs `name` through make_optimizer over the step table, checking every parameter and slot
// against the reference after every step.
void run_and_compare(const std::string& name, const std::map<std::string, double>& hp,
                     const Hyper& h) {
  std::vector<Tensor> params;
  std::vector<NamedTensor> named;
  for (int p = 0; p < 4; ++p) {
    params.push_back(from_vector<double>(initial_theta(p), Shape{kSizes[p]}, f64()));
    named.emplace_back(kNames[p], params.back());
  }
  auto opt = make_optimizer({name, hp, {"*.bias"}}, named);
  ASSERT_FALSE(opt->decays(2));
  const std::vector<std::string>& slot_names = optimizer_info(name).slots;

  State ref = initial_state();
  for (int step = 0; step < static_cast<int>(kHasGrad.size()); ++step) {
    for (int p = 0; p < 4; ++p) {
      params[p].set_grad(has_grad(step, p)
                             ? from_vector<double>(gradient(p, step), Shape{kSizes[p]}, f64())
                             : Tensor{});
    }
    const double lr = h.lr * kLr[step];
    if (kGradScaleArg[step] > 0.0) {
      opt->step(lr, from_vector<double>(Vec{kGradScaleArg[step]}, Shape{1}, f64()));
    } else {
      opt->step(lr);
    }
    if (name == "lars") {
      lars_reference_step(ref, step, h);
    } else {
      lamb_reference_step(ref, step, h);
    }

    std::map<std::string, Vec> state;
    for (const auto& [key, t] : opt->state_dict()) state[key] = t.to_vector<double>();
    ASSERT_EQ(state.at("state.step"), Vec{static_cast<double>(step + 1)});
    for (int p = 0; p < 4; ++p) {
      const std::string where = name + " step " + std::to_string(step + 1) + " " + kNames[p];
      expect_close(params[p].to_vector<double>(), ref.theta[p], where);
      expect_close(state.at("state." + kNames[p] + "." + slot_names[0]), ref.s0[p],
                   where + " " + slot_names[0]);
      if (slot_names.size() > 1) {
        expect_close(state.at("state." + kNames[p] + "." + slot_names[1]), ref.s1[p],
                     where + " " + slot_names[1]);
      }
    }
  }
}

// The reference itself must see the scenario: the lists really shrink and grow, and tensors
// without a gradient keep their values.
TEST(LarsLambShrinkingList, ScenarioShrinksAndGrows) {
  std::size_t shrinks = 0, grows = 0;
  for (std::size_t s = 1; s < kHasGrad.size(); ++s) {
    EXPECT_NE(kHasGrad[s], kHasGrad[s - 1]) << "step " << s + 1;
    shrinks += kHasGrad[s].size() < kHasGrad[s - 1].size() ? 1 : 0;
    grows += kHasGrad[s].size() > kHasGrad[s - 1].size() ? 1 : 0;
  }
  EXPECT_GE(shrinks, 2u);
  EXPECT_GE(grows, 2u);
  State ref = initial_state();
  const Hyper h{0.5, 0.9, 0.0, 0.0, 0.0, 0.01, 0.02};
  lars_reference_step(ref, 0, h);
  const Vec before = ref.theta[0];
  lars_reference_step(ref, 1, h);  // tensor 0 has no gradient at step 2
  EXPECT_EQ(ref.theta[0], before);
  EXPECT_NE(ref.theta[1], initial_theta(1));
}

TEST(LarsLambShrinkingList, Lars) {
  const Hyper h{0.5, 0.9, 0.0, 0.0, 1e-9, 0.01, 0.02};
  run_and_compare("lars",
                  {{"learning_rate", h.lr},
                   {"momentum", h.momentum},
                   {"epsilon", h.eps},
                   {"weight_decay", h.wd},
                   {"trust_coefficient", h.trust}},
                  h);
}

TEST(LarsLambShrinkingList, Lamb) {
  const Hyper h{0.02, 0.0, 0.8, 0.95, 1e-6, 0.1, 0.0};
  run_and_compare("lamb",
                  {{"learning_rate", h.lr},
                   {"beta1", h.beta1},
                   {"beta2", h.beta2},
                   {"epsilon", h.eps},
                   {"weight_decay", h.wd}},
                  h);
}

}  // namespace
}  // namespace pb::optim
