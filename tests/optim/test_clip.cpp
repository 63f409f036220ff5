// Clipping by global norm: exact rescaling above the threshold, no change below it, the logged
// norm is the unclipped one, the clipped-step count, the fused path (scale applied inside the
// optimizer update) and update clipping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/optim/clip.h"

namespace pb::optim {
namespace {

using Vec = std::vector<double>;

TensorOptions f64() {
  return TensorOptions{}.with_dtype(DType::F64);
}

// Gradients {3, 4} and {12}: global norm 13.
struct Grads {
  Tensor a = from_vector<double>(Vec{3.0, 4.0}, Shape{2}, f64());
  Tensor b = from_vector<double>(Vec{12.0}, Shape{1}, f64());
};

TEST(Clip, RescalesExactlyAboveThreshold) {
  Grads g;
  GradientClipper clipper(ClipConfig{6.5, ClipTarget::kGradient});
  clipper.clip_gradients({g.a, g.b});
  // g' = lambda g / ||g|| = 6.5 / 13 g = g / 2, exactly representable.
  EXPECT_EQ(g.a.to_vector<double>(), (Vec{1.5, 2.0}));
  EXPECT_EQ(g.b.to_vector<double>(), (Vec{6.0}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);  // the logged norm is the unclipped one
  EXPECT_EQ(clipper.scale().item<double>(), 0.5);
  const ClipStats stats = clipper.read_stats();
  EXPECT_EQ(stats.steps, 1);
  EXPECT_EQ(stats.clipped_steps, 1);
  EXPECT_EQ(stats.clipped_fraction, 1.0);
}

TEST(Clip, GeneralThresholdGivesNormLambda) {
  Tensor a = from_vector<double>(Vec{0.3, -1.7, 2.9}, Shape{3}, f64());
  Tensor b = from_vector<double>(Vec{-4.1, 0.05}, Shape{2}, f64());
  const double norm = std::sqrt(0.09 + 2.89 + 8.41 + 16.81 + 0.0025);
  GradientClipper clipper(ClipConfig{1.25, ClipTarget::kGradient});
  clipper.clip_gradients({a, b});
  const Vec va = a.to_vector<double>(), vb = b.to_vector<double>();
  EXPECT_NEAR(va[0], 1.25 * 0.3 / norm, 1e-15);
  EXPECT_NEAR(vb[0], 1.25 * -4.1 / norm, 1e-15);
  double clipped_sq = 0.0;
  for (double v : va) clipped_sq += v * v;
  for (double v : vb) clipped_sq += v * v;
  EXPECT_NEAR(std::sqrt(clipped_sq), 1.25, 1e-14);
  EXPECT_NEAR(clipper.read_grad_norm(), norm, 1e-14);
}

TEST(Clip, NoChangeBelowOrAtThreshold) {
  for (double lambda : {13.0, 20.0}) {
    Grads g;
    GradientClipper clipper(ClipConfig{lambda, ClipTarget::kGradient});
    clipper.clip_gradients({g.a, g.b});
    EXPECT_EQ(g.a.to_vector<double>(), (Vec{3.0, 4.0})) << lambda;
    EXPECT_EQ(g.b.to_vector<double>(), (Vec{12.0})) << lambda;
    EXPECT_EQ(clipper.read_grad_norm(), 13.0);
    EXPECT_EQ(clipper.read_stats().clipped_steps, 0);
  }
}

TEST(Clip, ZeroThresholdOnlyMeasures) {
  Grads g;
  GradientClipper clipper;  // max_norm 0
  clipper.clip_gradients({g.a, g.b});
  EXPECT_EQ(g.a.to_vector<double>(), (Vec{3.0, 4.0}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);
}

TEST(Clip, CountsAndFraction) {
  GradientClipper clipper(ClipConfig{10.0, ClipTarget::kGradient});
  for (double s : {1.0, 2.0, 0.5, 3.0}) {  // norms 13, 26, 6.5, 39: three of four clipped
    Tensor a = from_vector<double>(Vec{3.0 * s, 4.0 * s}, Shape{2}, f64());
    Tensor b = from_vector<double>(Vec{12.0 * s}, Shape{1}, f64());
    clipper.clip_gradients({a, b});
    EXPECT_EQ(clipper.read_grad_norm(), 13.0 * s);
  }
  const ClipStats stats = clipper.read_stats();
  EXPECT_EQ(stats.steps, 4);
  EXPECT_EQ(stats.clipped_steps, 3);
  EXPECT_EQ(stats.clipped_fraction, 0.75);

  // The counts travel with a checkpoint.
  GradientClipper restored(ClipConfig{10.0, ClipTarget::kGradient});
  restored.load_state_dict(clipper.state_dict());
  EXPECT_EQ(restored.read_stats().steps, 4);
  EXPECT_EQ(restored.read_stats().clipped_steps, 3);
  Grads g;
  restored.clip_gradients({g.a, g.b});
  EXPECT_EQ(restored.read_stats().clipped_steps, 4);
}

// The fused path: the optimizer multiplies each gradient by the factor inside its update.
TEST(Clip, StepScalesTheGradientInsideTheUpdate) {
  Tensor w = from_vector<double>(Vec{1.0, 1.0}, Shape{2}, f64());
  Tensor b = from_vector<double>(Vec{1.0}, Shape{1}, f64());
  auto opt = make_optimizer({"sgd", {{"learning_rate", 0.1}}, {}}, {{"w", w}, {"b", b}});
  GradientClipper clipper(ClipConfig{6.5, ClipTarget::kGradient});
  w.set_grad(from_vector<double>(Vec{3.0, 4.0}, Shape{2}, f64()));
  b.set_grad(from_vector<double>(Vec{12.0}, Shape{1}, f64()));
  clipper.step(*opt, opt->hyperparameter("learning_rate"));
  EXPECT_EQ(w.to_vector<double>(), (Vec{1.0 - 0.1 * 1.5, 1.0 - 0.1 * 2.0}));
  EXPECT_EQ(b.to_vector<double>(), (Vec{1.0 - 0.1 * 6.0}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);
  // The gradients themselves are left unscaled.
  EXPECT_EQ(w.grad().to_vector<double>(), (Vec{3.0, 4.0}));
  EXPECT_EQ(opt->step_count(), 1);
}

// Adam is invariant to a constant gradient scale only through its moments; clipping through the
// fused path must give exactly what clipping the gradients first gives.
TEST(Clip, FusedStepEqualsClipThenStep) {
  const Vec w0 = {0.5, -0.25, 2.0};
  const std::vector<Vec> grads = {{3.0, -4.0, 1.0}, {0.1, 0.2, -0.3}, {10.0, 5.0, -7.0}};
  Tensor w1 = from_vector<double>(w0, Shape{3}, f64());
  Tensor w2 = from_vector<double>(w0, Shape{3}, f64());
  auto o1 = make_optimizer({"adam", {{"learning_rate", 0.1}}, {}}, {{"w", w1}});
  auto o2 = make_optimizer({"adam", {{"learning_rate", 0.1}}, {}}, {{"w", w2}});
  GradientClipper c1(ClipConfig{2.0, ClipTarget::kGradient});
  GradientClipper c2(ClipConfig{2.0, ClipTarget::kGradient});
  for (const Vec& g : grads) {
    w1.set_grad(from_vector<double>(g, Shape{3}, f64()));
    c1.step(*o1, o1->hyperparameter("learning_rate"));
    Tensor g2 = from_vector<double>(g, Shape{3}, f64());
    c2.clip_gradients({g2});
    w2.set_grad(g2);
    o2->step(o2->hyperparameter("learning_rate"));
  }
  const Vec a = w1.to_vector<double>(), b = w2.to_vector<double>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-15);
  EXPECT_EQ(c1.read_stats().clipped_steps, 2);
}

// Update clipping: the step D = lr g (SGD) is clipped to norm lambda, the gradient is not.
TEST(Clip, ClipsTheUpdateInsteadOfTheGradient) {
  Tensor w = from_vector<double>(Vec{1.0, 1.0}, Shape{2}, f64());
  Tensor b = from_vector<double>(Vec{1.0}, Shape{1}, f64());
  auto opt = make_optimizer({"sgd", {{"learning_rate", 0.5}}, {}}, {{"w", w}, {"b", b}});
  GradientClipper clipper(ClipConfig{3.25, ClipTarget::kUpdate});
  w.set_grad(from_vector<double>(Vec{3.0, 4.0}, Shape{2}, f64()));
  b.set_grad(from_vector<double>(Vec{12.0}, Shape{1}, f64()));
  clipper.step(*opt, opt->hyperparameter("learning_rate"));
  // D = 0.5 g, ||D|| = 6.5 > 3.25: theta <- theta - D / 2.
  EXPECT_EQ(w.to_vector<double>(), (Vec{1.0 - 0.75, 1.0 - 1.0}));
  EXPECT_EQ(b.to_vector<double>(), (Vec{1.0 - 3.0}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);  // the gradient norm is still logged
  EXPECT_EQ(clipper.update_norm().item<double>(), 6.5);
  EXPECT_EQ(clipper.read_stats().clipped_steps, 1);

  // A small update is applied unchanged.
  w.set_grad(from_vector<double>(Vec{0.3, 0.4}, Shape{2}, f64()));
  b.set_grad(from_vector<double>(Vec{1.2}, Shape{1}, f64()));
  clipper.step(*opt, opt->hyperparameter("learning_rate"));
  EXPECT_EQ(w.to_vector<double>(), (Vec{0.25 - 0.15, 0.0 - 0.2}));
  EXPECT_EQ(clipper.read_stats().clipped_steps, 1);
  EXPECT_EQ(clipper.read_stats().steps, 2);
}

// With momentum the slots advance from the unclipped gradient; only the applied step is clipped.
TEST(Clip, UpdateClippingLeavesStateUnclipped) {
  Tensor w = from_vector<double>(Vec{0.0}, Shape{1}, f64());
  auto opt =
      make_optimizer({"momentum", {{"learning_rate", 1.0}, {"momentum", 0.5}}, {}}, {{"w", w}});
  GradientClipper clipper(ClipConfig{1.0, ClipTarget::kUpdate});
  w.set_grad(from_vector<double>(Vec{4.0}, Shape{1}, f64()));
  clipper.step(*opt, opt->hyperparameter("learning_rate"));  // v = 4, D = 4 -> clipped to 1
  EXPECT_EQ(w.to_vector<double>(), (Vec{-1.0}));
  clipper.step(
      *opt, opt->hyperparameter(
                "learning_rate"));  // v = 0.5 * 4 + 4 = 6, D clipped to 1 (6 * (1 / 6) may round)
  EXPECT_NEAR(w.to_vector<double>()[0], -2.0, 1e-15);
  for (const auto& [name, t] : opt->state_dict()) {
    if (name == "state.w.momentum") {
      EXPECT_EQ(t.to_vector<double>(), (Vec{6.0}));
    }
  }
}

TEST(Clip, Float32) {
  Tensor a = from_vector<float>(std::vector<float>{3.0f, 4.0f}, Shape{2});
  Tensor b = from_vector<float>(std::vector<float>{12.0f}, Shape{1});
  GradientClipper clipper(ClipConfig{6.5, ClipTarget::kGradient});
  clipper.clip_gradients({a, b});
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1.5f, 2.0f}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);
}

TEST(Clip, ConfigFromMapAndErrors) {
  const ClipConfig c = clip_config_from({{"max_norm", 2.0}, {"clip_update", 1}});
  EXPECT_EQ(c.max_norm, 2.0);
  EXPECT_EQ(c.target, ClipTarget::kUpdate);
  try {
    clip_config_from({{"max_nrom", 1.0}});
    FAIL() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown hyperparameter 'max_nrom' (did you mean "
                                         "'max_norm'?)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(clip_config_from({{"max_norm", -1.0}}), ValueError);
  EXPECT_THROW(GradientClipper(ClipConfig{-1.0, ClipTarget::kGradient}), ValueError);
  GradientClipper clipper(ClipConfig{1.0, ClipTarget::kUpdate});
  EXPECT_EQ(clipper.to_json()["target"], "update");
  EXPECT_THROW(clipper.read_grad_norm(), ValueError);
}

}  // namespace
}  // namespace pb::optim
