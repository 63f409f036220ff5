// Loss CPU kernels: hand-computed cross-entropy (plain, smoothed, weighted), finite-difference
// gradients, and MSE.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/loss.h"

namespace pb::kernels {
namespace {

// logits [0, ln 3]: softmax = [1/4, 3/4]; label 1 -> loss = -ln(3/4) = ln(4/3).
TEST(LossCpu, CrossEntropyHandComputed) {
  const std::vector<double> logits = {0.0, std::log(3.0)};
  const std::vector<int32_t> labels = {1};
  std::vector<double> probs(2);
  double loss = -1.0;
  softmax_cross_entropy_forward_cpu<double>(1, 2, logits.data(), labels.data(), nullptr, 0.0, &loss,
                                            probs.data());
  EXPECT_NEAR(loss, std::log(4.0 / 3.0), 1e-15);
  EXPECT_NEAR(probs[0], 0.25, 1e-15);
  EXPECT_NEAR(probs[1], 0.75, 1e-15);

  // dlogits = probs - onehot = [1/4, -1/4], times dloss.
  std::vector<double> dlogits(2);
  const double two = 2.0;
  softmax_cross_entropy_backward_cpu<double>(1, 2, probs.data(), labels.data(), nullptr, 0.0, &two,
                                             dlogits.data());
  EXPECT_NEAR(dlogits[0], 0.5, 1e-15);
  EXPECT_NEAR(dlogits[1], -0.5, 1e-15);

  // float agrees to float precision.
  const std::vector<float> logits_f = {0.0f, static_cast<float>(std::log(3.0))};
  std::vector<float> probs_f(2);
  float loss_f = -1.0f;
  softmax_cross_entropy_forward_cpu<float>(1, 2, logits_f.data(), labels.data(), nullptr, 0.0f,
                                           &loss_f, probs_f.data());
  EXPECT_NEAR(loss_f, std::log(4.0 / 3.0), 1e-7);
}

// Max subtraction: logits shifted by 1000 give the same loss (exp(1000) would overflow).
TEST(LossCpu, CrossEntropyIsStableForLargeLogits) {
  const std::vector<int32_t> labels = {1};
  for (const double shift : {1000.0, -1000.0}) {
    const std::vector<double> logits = {shift, shift + std::log(3.0)};
    std::vector<double> probs(2);
    double loss = -1.0;
    softmax_cross_entropy_forward_cpu<double>(1, 2, logits.data(), labels.data(), nullptr, 0.0,
                                              &loss, probs.data());
    EXPECT_NEAR(loss, std::log(4.0 / 3.0), 1e-12) << "shift=" << shift;
    EXPECT_NEAR(probs[1], 0.75, 1e-12) << "shift=" << shift;
  }
  // float: logits of 100 overflow exp() in float without the shift.
  const std::vector<float> big = {100.0f, 90.0f};
  const std::vector<int32_t> label0 = {0};
  std::vector<float> probs(2);
  float loss = -1.0f;
  softmax_cross_entropy_forward_cpu<float>(1, 2, big.data(), label0.data(), nullptr, 0.0f, &loss,
                                           probs.data());
  EXPECT_NEAR(loss, std::log1p(std::exp(-10.0)), 1e-7);
}

// Smoothing s = 0.2, K = 2: q = [0.1, 0.9] for label 1.
//   loss = -(0.1 ln(1/4) + 0.9 ln(3/4)) = 0.39754330131859191
//   dlogits = probs - q = [0.25 - 0.1, 0.75 - 0.9] = [0.15, -0.15]
TEST(LossCpu, CrossEntropyLabelSmoothing) {
  const std::vector<double> logits = {0.0, std::log(3.0)};
  const std::vector<int32_t> labels = {1};
  std::vector<double> probs(2), dlogits(2);
  double loss = -1.0;
  softmax_cross_entropy_forward_cpu<double>(1, 2, logits.data(), labels.data(), nullptr, 0.2, &loss,
                                            probs.data());
  EXPECT_NEAR(loss, 0.39754330131859191, 1e-15);
  const double one = 1.0;
  softmax_cross_entropy_backward_cpu<double>(1, 2, probs.data(), labels.data(), nullptr, 0.2, &one,
                                             dlogits.data());
  EXPECT_NEAR(dlogits[0], 0.15, 1e-15);
  EXPECT_NEAR(dlogits[1], -0.15, 1e-15);
}

// Two examples with weights {1, 3}: loss = (1 * l0 + 3 * l1) / 4.
TEST(LossCpu, CrossEntropyWeightedMean) {
  const std::vector<double> logits = {0.0, std::log(3.0), 0.0, 0.0};
  const std::vector<int32_t> labels = {1, 0};
  const std::vector<double> weights = {1.0, 3.0};
  std::vector<double> probs(4);
  double loss = -1.0;
  softmax_cross_entropy_forward_cpu<double>(2, 2, logits.data(), labels.data(), weights.data(), 0.0,
                                            &loss, probs.data());
  EXPECT_NEAR(loss, (std::log(4.0 / 3.0) + 3.0 * std::log(2.0)) / 4.0, 1e-15);
}

// A zero weight removes the example exactly, even with garbage logits and an invalid label
// (a padded slot in a partial eval batch); sum w == 0 gives loss 0 and zero gradients.
TEST(LossCpu, CrossEntropyZeroWeightDropsExample) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> logits = {0.3, -1.2,  2.0,    // example 0
                                      nan, 1e308, 5.0,    // example 1: padding
                                      1.0, 0.5,   -0.5};  // example 2
  const std::vector<int32_t> labels = {2, 12345, 0};
  const std::vector<double> weights = {0.5, 0.0, 2.0};
  std::vector<double> probs(9), dlogits(9);
  double loss = -1.0;
  softmax_cross_entropy_forward_cpu<double>(3, 3, logits.data(), labels.data(), weights.data(), 0.1,
                                            &loss, probs.data());
  const double one = 1.0;
  softmax_cross_entropy_backward_cpu<double>(3, 3, probs.data(), labels.data(), weights.data(), 0.1,
                                             &one, dlogits.data());

  const std::vector<double> kept_logits = {0.3, -1.2, 2.0, 1.0, 0.5, -0.5};
  const std::vector<int32_t> kept_labels = {2, 0};
  const std::vector<double> kept_weights = {0.5, 2.0};
  std::vector<double> kept_probs(6), kept_dlogits(6);
  double kept_loss = -2.0;
  softmax_cross_entropy_forward_cpu<double>(2, 3, kept_logits.data(), kept_labels.data(),
                                            kept_weights.data(), 0.1, &kept_loss,
                                            kept_probs.data());
  softmax_cross_entropy_backward_cpu<double>(2, 3, kept_probs.data(), kept_labels.data(),
                                             kept_weights.data(), 0.1, &one, kept_dlogits.data());
  EXPECT_EQ(loss, kept_loss);
  EXPECT_TRUE(std::isfinite(loss));
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(dlogits[k], kept_dlogits[k]);
    EXPECT_EQ(dlogits[3 + k], 0.0);
    EXPECT_EQ(dlogits[6 + k], kept_dlogits[3 + k]);
  }

  const std::vector<double> zeros = {0.0, 0.0, 0.0};
  loss = -1.0;
  softmax_cross_entropy_forward_cpu<double>(3, 3, logits.data(), labels.data(), zeros.data(), 0.1,
                                            &loss, probs.data());
  EXPECT_EQ(loss, 0.0);
  softmax_cross_entropy_backward_cpu<double>(3, 3, probs.data(), labels.data(), zeros.data(), 0.1,
                                             &one, dlogits.data());
  for (double d : dlogits) EXPECT_EQ(d, 0.0);
}

// Backward vs central differences of the forward loss in double, with smoothing and weights.
TEST(LossCpu, CrossEntropyBackwardMatchesFiniteDifferences) {
  const int64_t N = 4, K = 5;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> dist(-3.0, 3.0);
  std::vector<double> logits(N * K);
  for (double& z : logits) z = dist(rng);
  const std::vector<int32_t> labels = {0, 4, 2, 2};
  const std::vector<double> weights = {1.0, 0.25, 2.0, 0.0};
  const double smoothing = 0.1, dloss = 1.7;
  std::vector<double> probs(N * K), dlogits(N * K);
  double loss = 0.0;
  softmax_cross_entropy_forward_cpu<double>(N, K, logits.data(), labels.data(), weights.data(),
                                            smoothing, &loss, probs.data());
  softmax_cross_entropy_backward_cpu<double>(N, K, probs.data(), labels.data(), weights.data(),
                                             smoothing, &dloss, dlogits.data());
  const double h = 1e-6;
  std::vector<double> scratch(N * K);
  for (int64_t i = 0; i < N * K; ++i) {
    const double saved = logits[i];
    double lp = 0.0, lm = 0.0;
    logits[i] = saved + h;
    softmax_cross_entropy_forward_cpu<double>(N, K, logits.data(), labels.data(), weights.data(),
                                              smoothing, &lp, scratch.data());
    logits[i] = saved - h;
    softmax_cross_entropy_forward_cpu<double>(N, K, logits.data(), labels.data(), weights.data(),
                                              smoothing, &lm, scratch.data());
    logits[i] = saved;
    // Truncation ~h^2, rounding ~1e-16/h: 1e-8 is far above both.
    EXPECT_NEAR(dlogits[i], dloss * (lp - lm) / (2 * h), 1e-8) << "i=" << i;
  }
}

// pred [1, 2, 3], target [0, 0, 5]: squared errors {1, 4, 4} -> loss 9 / 3 = 3.
// dpred = 2 dloss (pred - target) / 3 = dloss * {2/3, 4/3, -4/3}; dtarget = -dpred.
TEST(LossCpu, MeanSquaredError) {
  const std::vector<double> pred = {1, 2, 3}, target = {0, 0, 5};
  double loss = -1.0;
  mse_forward_cpu<double>(3, pred.data(), target.data(), &loss);
  EXPECT_DOUBLE_EQ(loss, 3.0);
  std::vector<double> dpred(3), dtarget(3);
  const double dloss = 1.5;  // the upstream gradient, passed by pointer
  mse_backward_cpu<double>(3, pred.data(), target.data(), &dloss, dpred.data(), dtarget.data());
  EXPECT_DOUBLE_EQ(dpred[0], 1.0);
  EXPECT_DOUBLE_EQ(dpred[1], 2.0);
  EXPECT_DOUBLE_EQ(dpred[2], -2.0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(dtarget[i], -dpred[i]);
  // Either gradient may be skipped.
  std::vector<double> only(3);
  mse_backward_cpu<double>(3, pred.data(), target.data(), &dloss, nullptr, only.data());
  EXPECT_EQ(only, dtarget);

  float loss_f = -1.0f;
  const std::vector<float> pf = {1, 2, 3}, tf = {0, 0, 5};
  mse_forward_cpu<float>(3, pf.data(), tf.data(), &loss_f);
  EXPECT_EQ(loss_f, 3.0f);
}

}  // namespace
}  // namespace pb::kernels
