#pragma once
// Classification metrics.
#include "kernels/common.h"

namespace pb::kernels {

// Top-k error: example i is an error when its label is not among the k largest logits, i.e.
// when at least k logits are strictly greater than the label's logit (ties go in the example's
// favour). logits: (N,K), labels: (N) int32, weights: (N) or nullptr.
// Writes *errors = sum of w_i over errors and *total = sum of w_i (counts when weights is null).
template <typename T>
void topk_error_count_cpu(int64_t N, int64_t K, int64_t k, const T* logits, const int32_t* labels,
                          const T* weights, T* errors, T* total);

}  // namespace pb::kernels
