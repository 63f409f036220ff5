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

// CUDA version (float; errors, total and every pointer in device memory, nothing read back to
// the host). Same result as the CPU, except that a label outside [0, K) on a row with w_i != 0
// counts as an error (the CPU does not check labels). Deterministic reduction through
// `workspace`, reduce_cuda_workspace_bytes() bytes of device memory (kernels/reduce.h).
// N == 0 only clears *errors and *total. K >= 1 (std::invalid_argument).
void topk_error_count_cuda(cudaStream_t stream, int64_t N, int64_t K, int64_t k,
                           const float* logits, const int32_t* labels, const float* weights,
                           float* errors, float* total, void* workspace);

}  // namespace pb::kernels
