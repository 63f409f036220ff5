// Every update rule against an independent step-by-step computation in double, written here from
// the playbook's formulas (and You et al.'s for LARS/LAMB, Loshchilov & Hutter's for AdamW), on a
// small parameter vector with a fixed table of gradients and a learning rate that changes every
// step. Five steps cover the bias corrections at t = 1, 2, 3 and beyond.
//
// Tolerance: the optimizer runs in double too; the only differences are rounding order (for
// example lr * b_t folded into one constant), so 1e-12 relative is ample.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/tensor.h"
#include "runtime/optim/optimizer.h"

namespace pb::optim {
namespace {

using Vec = std::vector<double>;

const Vec kTheta0 = {1.0, -2.0, 0.5};
const std::vector<Vec> kGrads = {
    {0.5, -1.0, 2.0}, {0.1, 0.3, -0.7}, {-0.4, 0.9, 0.05}, {1.5, -0.2, 0.6}, {-0.8, -0.6, 0.25},
};
const Vec kLr = {0.1, 0.08, 0.05, 0.12, 0.03};  // eta_t, one per step
constexpr int kSteps = 5;

TensorOptions f64() {
  return TensorOptions{}.with_dtype(DType::F64);
}

Tensor vec_tensor(const Vec& v) {
  return from_vector<double>(v, Shape{static_cast<int64_t>(v.size())}, f64());
}

void expect_close(const Vec& got, const Vec& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i])))
        << what << " element " << i;
  }
}

// Runs `name` for kSteps on one parameter "w" = kTheta0 with the gradient table, returning the
// parameter after every step.
std::vector<Vec> run_optimizer(const std::string& name, const std::map<std::string, double>& hp) {
  Tensor w = vec_tensor(kTheta0);
  auto opt = make_optimizer({name, hp, {}}, {{"w", w}});
  std::vector<Vec> out;
  for (int t = 0; t < kSteps; ++t) {
    w.set_grad(vec_tensor(kGrads[t]));
    opt->step(kLr[t]);
    out.push_back(w.to_vector<double>());
  }
  EXPECT_EQ(opt->step_count(), kSteps);
  return out;
}

void compare(const std::string& name, const std::map<std::string, double>& hp,
             const std::vector<Vec>& reference) {
  const std::vector<Vec> got = run_optimizer(name, hp);
  for (int t = 0; t < kSteps; ++t) {
    expect_close(got[t], reference[t], name + " after step " + std::to_string(t + 1));
  }
}

// ---- the playbook's rules
// -------------------------------------------------------------------------

// theta_{t+1} = theta_t - eta_t (g + wd theta_t)
std::vector<Vec> sgd_reference(double wd) {
  Vec theta = kTheta0;
  std::vector<Vec> out;
  for (int t = 0; t < kSteps; ++t) {
    for (int i = 0; i < 3; ++i) {
      const double g = kGrads[t][i] + wd * theta[i];
      theta[i] = theta[i] - kLr[t] * g;
    }
    out.push_back(theta);
  }
  return out;
}

TEST(UpdateRules, Sgd) {
  compare("sgd", {{"learning_rate", 0.1}}, sgd_reference(0.0));
}

TEST(UpdateRules, SgdCoupledWeightDecay) {
  compare("sgd", {{"learning_rate", 0.1}, {"weight_decay", 0.05}}, sgd_reference(0.05));
}

// v_0 = 0; v_{t+1} = gamma v_t + g; theta_{t+1} = theta_t - eta v_{t+1}   (nesterov: the step is
// eta (gamma v_{t+1} + g))
std::vector<Vec> momentum_reference(double gamma, bool nesterov, double wd) {
  Vec theta = kTheta0, v(3, 0.0);
  std::vector<Vec> out;
  for (int t = 0; t < kSteps; ++t) {
    for (int i = 0; i < 3; ++i) {
      const double g = kGrads[t][i] + wd * theta[i];
      v[i] = gamma * v[i] + g;
      theta[i] -= nesterov ? kLr[t] * (gamma * v[i] + g) : kLr[t] * v[i];
    }
    out.push_back(theta);
  }
  return out;
}

TEST(UpdateRules, Momentum) {
  compare("momentum", {{"learning_rate", 0.1}, {"momentum", 0.9}},
          momentum_reference(0.9, false, 0.0));
  compare("momentum", {{"learning_rate", 0.1}, {"momentum", 0.5}, {"weight_decay", 0.01}},
          momentum_reference(0.5, false, 0.01));
}

TEST(UpdateRules, Nesterov) {
  compare("nesterov", {{"learning_rate", 0.1}, {"momentum", 0.9}},
          momentum_reference(0.9, true, 0.0));
  compare("nesterov", {{"learning_rate", 0.1}, {"momentum", 0.7}, {"weight_decay", 0.02}},
          momentum_reference(0.7, true, 0.02));
}

// v_0 = 1, m_0 = 0; v <- rho v + (1 - rho) g^2; m <- gamma m + eta / sqrt(v + eps) g;
// theta <- theta - m
std::vector<Vec> rmsprop_reference(double rho, double gamma, double eps, double wd) {
  Vec theta = kTheta0, v(3, 1.0), m(3, 0.0);
  std::vector<Vec> out;
  for (int t = 0; t < kSteps; ++t) {
    for (int i = 0; i < 3; ++i) {
      const double g = kGrads[t][i] + wd * theta[i];
      v[i] = rho * v[i] + (1.0 - rho) * g * g;
      m[i] = gamma * m[i] + kLr[t] / std::sqrt(v[i] + eps) * g;
      theta[i] -= m[i];
    }
    out.push_back(theta);
  }
  return out;
}

TEST(UpdateRules, RmsProp) {
  compare("rmsprop", {{"learning_rate", 0.1}, {"rho", 0.9}, {"momentum", 0.8}, {"epsilon", 1e-3}},
          rmsprop_reference(0.9, 0.8, 1e-3, 0.0));
  compare("rmsprop", {{"learning_rate", 0.1}, {"rho", 0.5}, {"weight_decay", 0.1}},
          rmsprop_reference(0.5, 0.0, 1e-8, 0.1));
}

// v_0 = 1 is the playbook's convention: the first step is eta g / sqrt(rho + (1 - rho) g^2 + eps),
// much smaller than the g / |g| of a v_0 = 0 start.
TEST(UpdateRules, RmsPropStartsFromOne) {
  const std::vector<Vec> got =
      run_optimizer("rmsprop", {{"learning_rate", 0.1}, {"rho", 0.9}, {"epsilon", 0.0}});
  for (int i = 0; i < 3; ++i) {
    const double g = kGrads[0][i];
    EXPECT_NEAR(kTheta0[i] - got[0][i], 0.1 * g / std::sqrt(0.9 + 0.1 * g * g), 1e-14);
  }
}

// Adam, NAdam and AdamW, with the playbook's b_{t+1} = sqrt(1 - beta2^{t+1}) / (1 - beta1^{t+1})
// applied to the step, outside epsilon.
enum class AdamVariant { kAdam, kNAdam, kAdamW };

std::vector<Vec> adam_reference(AdamVariant variant, double beta1, double beta2, double eps,
                                double wd) {
  Vec theta = kTheta0, m(3, 0.0), v(3, 0.0);
  std::vector<Vec> out;
  for (int t = 0; t < kSteps; ++t) {
    const int k = t + 1;  // the playbook's t + 1
    const double b = std::sqrt(1.0 - std::pow(beta2, k)) / (1.0 - std::pow(beta1, k));
    const double alpha = kLr[t];
    for (int i = 0; i < 3; ++i) {
      const double g = variant == AdamVariant::kAdamW ? kGrads[t][i] : kGrads[t][i] + wd * theta[i];
      m[i] = beta1 * m[i] + (1.0 - beta1) * g;
      v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
      switch (variant) {
        case AdamVariant::kAdam:
          theta[i] = theta[i] - alpha * m[i] / (std::sqrt(v[i]) + eps) * b;
          break;
        case AdamVariant::kNAdam:
          theta[i] =
              theta[i] - alpha * (beta1 * m[i] + (1.0 - beta1) * g) / (std::sqrt(v[i]) + eps) * b;
          break;
        case AdamVariant::kAdamW:
          theta[i] = theta[i] - alpha * wd * theta[i] - alpha * m[i] / (std::sqrt(v[i]) + eps) * b;
          break;
      }
    }
    out.push_back(theta);
  }
  return out;
}

TEST(UpdateRules, Adam) {
  compare("adam", {{"learning_rate", 0.1}},
          adam_reference(AdamVariant::kAdam, 0.9, 0.999, 1e-8, 0));
  compare("adam",
          {{"learning_rate", 0.1},
           {"beta1", 0.5},
           {"beta2", 0.8},
           {"epsilon", 0.1},
           {"weight_decay", 0.03}},
          adam_reference(AdamVariant::kAdam, 0.5, 0.8, 0.1, 0.03));
}

// With eps = 0 the first Adam step is exactly alpha * sign(g): m_1 = (1 - beta1) g,
// v_1 = (1 - beta2) g^2, b_1 = sqrt(1 - beta2) / (1 - beta1). The next two steps check b_2, b_3
// against values computed by hand from the moments.
TEST(UpdateRules, AdamBiasCorrectionFirstSteps) {
  const double beta1 = 0.9, beta2 = 0.99;
  const std::vector<Vec> got = run_optimizer(
      "adam", {{"learning_rate", 1.0}, {"beta1", beta1}, {"beta2", beta2}, {"epsilon", 0.0}});
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(kTheta0[i] - got[0][i], kLr[0] * (kGrads[0][i] > 0 ? 1.0 : -1.0), 1e-14);
  }
  // t = 2 and 3 for element 0, written out.
  const double g1 = kGrads[0][0], g2 = kGrads[1][0], g3 = kGrads[2][0];
  const double m2 = beta1 * (1 - beta1) * g1 + (1 - beta1) * g2;
  const double v2 = beta2 * (1 - beta2) * g1 * g1 + (1 - beta2) * g2 * g2;
  const double b2 = std::sqrt(1 - beta2 * beta2) / (1 - beta1 * beta1);
  EXPECT_NEAR(got[0][0] - got[1][0], kLr[1] * m2 / std::sqrt(v2) * b2, 1e-14);
  const double m3 = beta1 * m2 + (1 - beta1) * g3;
  const double v3 = beta2 * v2 + (1 - beta2) * g3 * g3;
  const double b3 = std::sqrt(1 - beta2 * beta2 * beta2) / (1 - beta1 * beta1 * beta1);
  EXPECT_NEAR(got[1][0] - got[2][0], kLr[2] * m3 / std::sqrt(v3) * b3, 1e-14);
}

TEST(UpdateRules, NAdam) {
  compare("nadam", {{"learning_rate", 0.1}},
          adam_reference(AdamVariant::kNAdam, 0.9, 0.999, 1e-8, 0));
  compare("nadam",
          {{"learning_rate", 0.1},
           {"beta1", 0.6},
           {"beta2", 0.9},
           {"epsilon", 0.01},
           {"weight_decay", 0.05}},
          adam_reference(AdamVariant::kNAdam, 0.6, 0.9, 0.01, 0.05));
}

TEST(UpdateRules, AdamWDecoupledWeightDecay) {
  compare("adamw", {{"learning_rate", 0.1}, {"weight_decay", 0.1}},
          adam_reference(AdamVariant::kAdamW, 0.9, 0.999, 1e-8, 0.1));
  // Decoupled is not coupled: with the same wd, adam and adamw differ.
  const std::vector<Vec> coupled =
      run_optimizer("adam", {{"learning_rate", 0.1}, {"weight_decay", 0.1}});
  const std::vector<Vec> decoupled =
      run_optimizer("adamw", {{"learning_rate", 0.1}, {"weight_decay", 0.1}});
  EXPECT_GT(std::abs(coupled[4][0] - decoupled[4][0]), 1e-4);
}

// ---- weight-decay exclusion -------------------------------------------------------------------

// A 2-D weight and a 1-D bias; with no_decay_1d (or a name pattern) only the weight decays.
struct TwoTensors {
  Tensor w = from_vector<double>(Vec{1.0, -2.0, 0.5, 0.25}, Shape{2, 2}, f64());
  Tensor b = from_vector<double>(Vec{0.3, -0.7}, Shape{2}, f64());
  std::vector<NamedTensor> named() { return {{"fc.weight", w}, {"fc.bias", b}}; }
};

const std::vector<Vec> kWGrads = {
    {0.5, -1.0, 2.0, 0.1}, {0.3, -0.7, -0.4, 0.9}, {0.05, 1.5, -0.2, 0.6}, {-0.8, -0.6, 0.25, 0.1}};
const std::vector<Vec> kBGrads = {{0.2, -0.1}, {-0.3, 0.4}, {0.6, 0.05}, {-0.2, -0.9}};

// Plain adam-family reference on one vector (used for both tensors with their own wd).
Vec adam_vector_reference(AdamVariant variant, Vec theta, const std::vector<Vec>& grads, double lr,
                          double wd) {
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  Vec m(theta.size(), 0.0), v(theta.size(), 0.0);
  for (std::size_t t = 0; t < grads.size(); ++t) {
    const int k = static_cast<int>(t) + 1;
    const double b = std::sqrt(1.0 - std::pow(beta2, k)) / (1.0 - std::pow(beta1, k));
    for (std::size_t i = 0; i < theta.size(); ++i) {
      const double g = variant == AdamVariant::kAdamW ? grads[t][i] : grads[t][i] + wd * theta[i];
      m[i] = beta1 * m[i] + (1.0 - beta1) * g;
      v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
      const double decay = variant == AdamVariant::kAdamW ? lr * wd * theta[i] : 0.0;
      theta[i] = theta[i] - decay - lr * m[i] / (std::sqrt(v[i]) + eps) * b;
    }
  }
  return theta;
}

void run_two(Optimizer& opt, TwoTensors& p) {
  for (std::size_t t = 0; t < kWGrads.size(); ++t) {
    p.w.set_grad(from_vector<double>(kWGrads[t], Shape{2, 2}, f64()));
    p.b.set_grad(from_vector<double>(kBGrads[t], Shape{2}, f64()));
    opt.step(opt.hyperparameter("learning_rate"));
  }
}

TEST(UpdateRules, ExcludeOneDimensionalFromCoupledDecay) {
  TwoTensors p;
  const Vec w0 = p.w.to_vector<double>(), b0 = p.b.to_vector<double>();
  auto opt = make_optimizer(
      {"adam", {{"learning_rate", 0.05}, {"weight_decay", 0.2}, {"no_decay_1d", 1}}, {}},
      p.named());
  EXPECT_TRUE(opt->decays(0));
  EXPECT_FALSE(opt->decays(1));
  run_two(*opt, p);
  expect_close(p.w.to_vector<double>(),
               adam_vector_reference(AdamVariant::kAdam, w0, kWGrads, 0.05, 0.2), "weight");
  expect_close(p.b.to_vector<double>(),
               adam_vector_reference(AdamVariant::kAdam, b0, kBGrads, 0.05, 0.0), "bias");
}

TEST(UpdateRules, ExcludeByNamePatternFromDecoupledDecay) {
  TwoTensors p;
  const Vec w0 = p.w.to_vector<double>(), b0 = p.b.to_vector<double>();
  auto opt = make_optimizer({"adamw", {{"learning_rate", 0.05}, {"weight_decay", 0.3}}, {"*.bias"}},
                            p.named());
  run_two(*opt, p);
  expect_close(p.w.to_vector<double>(),
               adam_vector_reference(AdamVariant::kAdamW, w0, kWGrads, 0.05, 0.3), "weight");
  expect_close(p.b.to_vector<double>(),
               adam_vector_reference(AdamVariant::kAdamW, b0, kBGrads, 0.05, 0.0), "bias");
}

TEST(UpdateRules, ExcludedParametersAreListedInJson) {
  TwoTensors p;
  auto opt = make_optimizer({"sgd", {{"learning_rate", 0.1}, {"weight_decay", 0.1}}, {"fc.b?as"}},
                            p.named());
  const auto j = opt->to_json();
  ASSERT_EQ(j["no_decay_parameters"].size(), 1u);
  EXPECT_EQ(j["no_decay_parameters"][0], "fc.bias");
}

// ---- LARS and LAMB: per-tensor trust ratios ----------------------------------------------------

double norm(const Vec& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

// You et al. 2017 with momentum: tau = eta ||theta|| / (||g|| + wd ||theta|| + eps);
// v <- gamma v + lr tau (g + wd theta); theta <- theta - v. Excluded tensors: tau = 1, wd = 0.
Vec lars_reference(Vec theta, const std::vector<Vec>& grads, double lr, double gamma, double wd,
                   double eta, double eps, bool excluded) {
  Vec v(theta.size(), 0.0);
  if (excluded) wd = 0.0;
  for (const Vec& g : grads) {
    const double pn = norm(theta), gn = norm(g);
    const double tau = excluded ? 1.0 : eta * pn / (gn + wd * pn + eps);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      v[i] = gamma * v[i] + lr * tau * (g[i] + wd * theta[i]);
      theta[i] -= v[i];
    }
  }
  return theta;
}

TEST(UpdateRules, LarsLayerwiseTrustRatio) {
  TwoTensors p;
  const Vec w0 = p.w.to_vector<double>(), b0 = p.b.to_vector<double>();
  auto opt = make_optimizer({"lars",
                             {{"learning_rate", 0.5},
                              {"momentum", 0.9},
                              {"weight_decay", 0.01},
                              {"trust_coefficient", 0.02},
                              {"epsilon", 1e-9},
                              {"no_decay_1d", 1}},
                             {}},
                            p.named());
  run_two(*opt, p);
  expect_close(p.w.to_vector<double>(),
               lars_reference(w0, kWGrads, 0.5, 0.9, 0.01, 0.02, 1e-9, false), "weight");
  expect_close(p.b.to_vector<double>(),
               lars_reference(b0, kBGrads, 0.5, 0.9, 0.01, 0.02, 1e-9, true), "bias");
}

TEST(UpdateRules, LarsBothTensorsAdapted) {
  TwoTensors p;
  const Vec w0 = p.w.to_vector<double>(), b0 = p.b.to_vector<double>();
  auto opt = make_optimizer(
      {"lars", {{"learning_rate", 1.0}, {"momentum", 0.5}, {"weight_decay", 0.001}}, {}},
      p.named());
  run_two(*opt, p);
  expect_close(p.w.to_vector<double>(),
               lars_reference(w0, kWGrads, 1.0, 0.5, 0.001, 0.001, 0.0, false), "weight");
  expect_close(p.b.to_vector<double>(),
               lars_reference(b0, kBGrads, 1.0, 0.5, 0.001, 0.001, 0.0, false), "bias");
}

// You et al. 2019, Algorithm 2 (phi = identity): m^ = m / (1 - beta1^t), v^ = v / (1 - beta2^t),
// r = m^ / (sqrt(v^) + eps) + wd theta, theta <- theta - lr ||theta|| / ||r|| r.
Vec lamb_reference(Vec theta, const std::vector<Vec>& grads, double lr, double beta1, double beta2,
                   double eps, double wd, bool excluded) {
  Vec m(theta.size(), 0.0), v(theta.size(), 0.0), r(theta.size());
  if (excluded) wd = 0.0;
  for (std::size_t t = 0; t < grads.size(); ++t) {
    const int k = static_cast<int>(t) + 1;
    for (std::size_t i = 0; i < theta.size(); ++i) {
      const double g = grads[t][i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      const double mhat = m[i] / (1 - std::pow(beta1, k));
      const double vhat = v[i] / (1 - std::pow(beta2, k));
      r[i] = mhat / (std::sqrt(vhat) + eps) + wd * theta[i];
    }
    const double tau = excluded ? 1.0 : norm(theta) / norm(r);
    for (std::size_t i = 0; i < theta.size(); ++i) theta[i] -= lr * tau * r[i];
  }
  return theta;
}

TEST(UpdateRules, LambLayerwiseTrustRatio) {
  TwoTensors p;
  const Vec w0 = p.w.to_vector<double>(), b0 = p.b.to_vector<double>();
  auto opt = make_optimizer({"lamb",
                             {{"learning_rate", 0.01},
                              {"beta1", 0.8},
                              {"beta2", 0.95},
                              {"epsilon", 1e-6},
                              {"weight_decay", 0.1}},
                             {"*.bias"}},
                            p.named());
  run_two(*opt, p);
  expect_close(p.w.to_vector<double>(),
               lamb_reference(w0, kWGrads, 0.01, 0.8, 0.95, 1e-6, 0.1, false), "weight");
  expect_close(p.b.to_vector<double>(),
               lamb_reference(b0, kBGrads, 0.01, 0.8, 0.95, 1e-6, 0.1, true), "bias");
}

// A parameter with no gradient this step is skipped: it keeps its value and its state.
TEST(UpdateRules, ParametersWithoutGradientAreSkipped) {
  TwoTensors p;
  const Vec b0 = p.b.to_vector<double>();
  auto opt = make_optimizer({"momentum", {{"learning_rate", 0.1}}, {}}, p.named());
  p.w.set_grad(from_vector<double>(kWGrads[0], Shape{2, 2}, f64()));
  opt->step(opt->hyperparameter("learning_rate"));
  EXPECT_EQ(p.b.to_vector<double>(), b0);
  const auto state = opt->state_dict();
  for (const auto& [name, t] : state) {
    if (name == "state.fc.bias.momentum") {
      EXPECT_EQ(t.to_vector<double>(), Vec(2, 0.0));
    }
  }
}

// Float32 parameters run the same rules (the CPU kernel is a template); close to double.
TEST(UpdateRules, Float32MatchesFloat64) {
  for (const std::string& name : optimizer_names()) {
    Tensor w64 = vec_tensor(kTheta0);
    Tensor w32 = from_vector<float>(std::vector<float>{1.0f, -2.0f, 0.5f}, Shape{3});
    auto o64 = make_optimizer({name, {{"learning_rate", 0.01}}, {}}, {{"w", w64}});
    auto o32 = make_optimizer({name, {{"learning_rate", 0.01}}, {}}, {{"w", w32}});
    for (int t = 0; t < kSteps; ++t) {
      w64.set_grad(vec_tensor(kGrads[t]));
      std::vector<float> g32(kGrads[t].begin(), kGrads[t].end());
      w32.set_grad(from_vector<float>(g32, Shape{3}));
      o64->step(o64->hyperparameter("learning_rate"));
      o32->step(o32->hyperparameter("learning_rate"));
    }
    const Vec a = w64.to_vector<double>();
    const std::vector<float> b = w32.to_vector<float>();
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << name << " element " << i;
  }
}

}  // namespace
}  // namespace pb::optim
