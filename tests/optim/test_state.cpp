// Saving and restoring optimizer (and EMA, clipping) state resumes bit for bit: 2N steps in one
// go against N steps, state_dict(), a new optimizer over a copy of the parameters,
// load_state_dict(), N more steps; the raw parameter bytes must be equal. Float32 on the CPU, the
// training configuration, for every optimizer in the registry.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/optim/clip.h"
#include "runtime/optim/ema.h"
#include "runtime/optim/optimizer.h"
#include "runtime/optim/schedule.h"

namespace pb::optim {
namespace {

constexpr int kHalf = 4;

// A small "model": a conv-like weight, a bias and a norm scale.
struct Params {
  Tensor w, b, gamma;
  explicit Params(uint64_t seed) {
    Generator gen(seed);
    w = normal(Shape{4, 3, 3}, 0.0, 0.5, gen);
    b = normal(Shape{4}, 0.0, 0.1, gen);
    gamma = uniform(Shape{4}, 0.5, 1.5, gen);
  }
  std::vector<NamedTensor> named() const {
    return {{"conv.weight", w}, {"conv.bias", b}, {"bn.weight", gamma}};
  }
  Params copy() const {
    Params p(0);
    p.w = w.clone();
    p.b = b.clone();
    p.gamma = gamma.clone();
    return p;
  }
};

// Deterministic gradients of step k (the same in both runs).
void set_grads(const Params& p, int k) {
  Generator gen(1000 + static_cast<uint64_t>(k));
  for (const auto& [name, t] : p.named()) t.set_grad(normal(t.shape(), 0.0, 1.0, gen));
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

OptimizerConfig config_for(const std::string& name) {
  OptimizerConfig c{name, {{"learning_rate", 0.05}, {"weight_decay", 0.01}}, {"*.bias"}};
  if (name == "lars") c.hyperparameters["learning_rate"] = 1.0;
  return c;
}

class ResumeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ResumeTest, ResumesBitwise) {
  const std::string name = GetParam();
  const Schedule schedule =
      make_schedule({"cosine", {{"warmup_steps", 2}, {"decay_steps", 10}}, {}}, 0.05);

  // Reference: 2N steps.
  Params ref(7);
  auto opt_ref = make_optimizer(config_for(name), ref.named());
  for (int k = 0; k < 2 * kHalf; ++k) {
    set_grads(ref, k);
    opt_ref->step(schedule(opt_ref->step_count()));
  }

  // N steps, save, restore into a fresh optimizer over copied parameters, N steps.
  Params run(7);
  auto opt_a = make_optimizer(config_for(name), run.named());
  for (int k = 0; k < kHalf; ++k) {
    set_grads(run, k);
    opt_a->step(schedule(opt_a->step_count()));
  }
  const std::vector<NamedTensor> state = opt_a->state_dict();
  Params resumed = run.copy();
  auto opt_b = make_optimizer(config_for(name), resumed.named());
  opt_b->load_state_dict(state);
  EXPECT_EQ(opt_b->step_count(), kHalf);
  for (int k = kHalf; k < 2 * kHalf; ++k) {
    set_grads(resumed, k);
    opt_b->step(schedule(opt_b->step_count()));
  }

  const auto a = ref.named(), b = resumed.named();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bytes(a[i].second, b[i].second)) << name << " " << a[i].first;
  }
  // And the slots too.
  const auto sa = opt_ref->state_dict(), sb = opt_b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(same_bytes(sa[i].second, sb[i].second)) << name << " " << sa[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(AllOptimizers, ResumeTest, ::testing::ValuesIn(optimizer_names()),
                         [](const auto& param_info) { return param_info.param; });

TEST(OptimizerState, NamesAndShapes) {
  Params p(1);
  auto opt = make_optimizer({"adam", {{"learning_rate", 0.1}}, {}}, p.named());
  const auto state = opt->state_dict();
  ASSERT_EQ(state.size(), 7u);
  EXPECT_EQ(state[0].first, "state.step");
  EXPECT_EQ(state[1].first, "state.conv.weight.exp_avg");
  EXPECT_EQ(state[2].first, "state.conv.weight.exp_avg_sq");
  EXPECT_EQ(state[1].second.shape(), p.w.shape());
  EXPECT_EQ(state[6].first, "state.bn.weight.exp_avg_sq");

  auto rms = make_optimizer({"rmsprop", {{"learning_rate", 0.1}}, {}}, p.named());
  const auto rs = rms->state_dict();
  EXPECT_EQ(rs[1].first, "state.conv.weight.square_avg");
  EXPECT_EQ(rs[1].second.to_vector<float>()[0], 1.0f);  // v_0 = 1
  EXPECT_EQ(rs[2].first, "state.conv.weight.momentum");
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(OptimizerState, LoadErrors) {
  Params p(1);
  auto adam = make_optimizer({"adam", {{"learning_rate", 0.1}}, {}}, p.named());
  auto momentum = make_optimizer({"momentum", {{"learning_rate", 0.1}}, {}}, p.named());
  std::string msg = error_of([&] { adam->load_state_dict(momentum->state_dict()); });
  EXPECT_NE(msg.find("missing 'state.conv.weight.exp_avg'"), std::string::npos) << msg;

  std::vector<NamedTensor> state = adam->state_dict();
  state.emplace_back("state.conv.weight.exp_avgg", zeros(Shape{1}));
  msg = error_of([&] { adam->load_state_dict(state); });
  EXPECT_NE(msg.find("unexpected entry 'state.conv.weight.exp_avgg'"), std::string::npos) << msg;

  state = adam->state_dict();
  state[1].second = zeros(Shape{3});
  msg = error_of([&] { adam->load_state_dict(state); });
  EXPECT_NE(msg.find("'state.conv.weight.exp_avg' is (3) float32, expected (4, 3, 3) float32"),
            std::string::npos)
      << msg;

  // Entries that are not optimizer state (parameters, EMA) are ignored.
  state = adam->state_dict();
  state.emplace_back("conv.weight", p.w);
  EXPECT_NO_THROW(adam->load_state_dict(state));
}

// New parameter values for step k (standing in for optimizer steps).
void perturb(const Params& p, int k) {
  Generator gen(500 + static_cast<uint64_t>(k));
  for (const auto& [name, t] : p.named()) t.copy_(normal(t.shape(), 0.0, 1.0, gen));
}

TEST(EmaState, ResumesBitwise) {
  Params a(3), b(3);
  ExponentialMovingAverage ema_a(a.named(), {0.9, true});
  for (int k = 0; k < 3; ++k) {
    perturb(a, k);
    ema_a.update();
  }
  ExponentialMovingAverage ema_b(b.named(), {0.9, true});
  ema_b.load_state_dict(ema_a.state_dict());
  EXPECT_EQ(ema_b.num_updates(), 3);
  perturb(a, 3);
  perturb(b, 3);
  ema_a.update();
  ema_b.update();
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(same_bytes(ema_a.averages()[i].second, ema_b.averages()[i].second));
  }
}

}  // namespace
}  // namespace pb::optim
