// Top-k error counts: hand-built rankings, ties, weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/metrics.h"

namespace pb::kernels {
namespace {

// Six classes, four examples; the label's rank (number of strictly larger logits) is
//   example 0: label 0, logit 0.9 is the largest        -> rank 0 (top-1 and top-5 correct)
//   example 1: label 5, three logits above it           -> rank 3 (top-1 error, top-5 correct)
//   example 2: label 2, logit is the smallest of six    -> rank 5 (top-1 and top-5 error)
//   example 3: label 1, logit 0.1 below all others      -> rank 5 (error in both)
const std::vector<double> kLogits = {0.9, 0.1, 0.2, 0.3, 0.4, 0.5,   // 0
                                     0.1, 0.9, 0.8, 0.7, 0.2, 0.6,   // 1: 0.9, 0.8, 0.7 > 0.6
                                     0.5, 0.4, -1., 0.3, 0.2, 0.1,   // 2
                                     0.7, 0.1, 0.6, 0.5, 0.4, 0.3};  // 3
const std::vector<int32_t> kLabels = {0, 5, 2, 1};

TEST(MetricsCpu, TopOneAndTopFive) {
  double errors = -1.0, total = -1.0;
  topk_error_count_cpu<double>(4, 6, 1, kLogits.data(), kLabels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 3.0);
  EXPECT_EQ(total, 4.0);
  topk_error_count_cpu<double>(4, 6, 5, kLogits.data(), kLabels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 2.0);
  EXPECT_EQ(total, 4.0);
  topk_error_count_cpu<double>(4, 6, 4, kLogits.data(), kLabels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 2.0);  // rank 3 < 4 is correct
  topk_error_count_cpu<double>(4, 6, 3, kLogits.data(), kLabels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 3.0);  // rank 3 >= 3 is an error
  topk_error_count_cpu<double>(4, 6, 6, kLogits.data(), kLabels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 0.0);  // k = K: nothing can be an error

  std::vector<float> logits_f(kLogits.begin(), kLogits.end());
  float errors_f = -1.0f, total_f = -1.0f;
  topk_error_count_cpu<float>(4, 6, 1, logits_f.data(), kLabels.data(), nullptr, &errors_f,
                              &total_f);
  EXPECT_EQ(errors_f, 3.0f);
  EXPECT_EQ(total_f, 4.0f);
}

// Ties go in the example's favour: a label tied with the maximum is top-1 correct; a label tied
// with the fifth-largest value is top-5 correct when only four values are strictly larger.
TEST(MetricsCpu, TiesCountAsCorrect) {
  const std::vector<double> tied = {1.0, 1.0, 1.0};
  const std::vector<int32_t> labels = {2};
  double errors = -1.0, total = -1.0;
  topk_error_count_cpu<double>(1, 3, 1, tied.data(), labels.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 0.0);
  EXPECT_EQ(total, 1.0);

  // Four values strictly above the label's 0.5, two more equal to it.
  const std::vector<double> row = {0.9, 0.8, 0.5, 0.7, 0.6, 0.5, 0.5, 0.1};
  const std::vector<int32_t> label = {5};
  topk_error_count_cpu<double>(1, 8, 5, row.data(), label.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 0.0);
  topk_error_count_cpu<double>(1, 8, 4, row.data(), label.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 1.0);
}

// Weighted: errors = sum of weights of erroneous examples, total = sum of all weights; a zero
// weight removes an example even when its label is out of range.
TEST(MetricsCpu, WeightsAndPadding) {
  const std::vector<double> weights = {0.5, 2.0, 0.25, 0.0};
  std::vector<int32_t> labels = kLabels;
  labels[3] = 999;  // padded example: never read
  double errors = -1.0, total = -1.0;
  topk_error_count_cpu<double>(4, 6, 1, kLogits.data(), labels.data(), weights.data(), &errors,
                               &total);
  EXPECT_EQ(errors, 2.25);  // examples 1 and 2
  EXPECT_EQ(total, 2.75);
  topk_error_count_cpu<double>(4, 6, 5, kLogits.data(), labels.data(), weights.data(), &errors,
                               &total);
  EXPECT_EQ(errors, 0.25);  // example 2
  EXPECT_EQ(total, 2.75);
}

// A NaN label logit is an error, not a free correct answer.
TEST(MetricsCpu, NaNLabelLogitIsAnError) {
  const std::vector<double> row = {std::numeric_limits<double>::quiet_NaN(), 0.5, 0.2};
  const std::vector<int32_t> label = {0};
  double errors = -1.0, total = -1.0;
  topk_error_count_cpu<double>(1, 3, 5, row.data(), label.data(), nullptr, &errors, &total);
  EXPECT_EQ(errors, 1.0);
  EXPECT_EQ(total, 1.0);
}

}  // namespace
}  // namespace pb::kernels
