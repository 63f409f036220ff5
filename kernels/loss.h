#pragma once
// Losses. Each reduces to one scalar.
#include "kernels/common.h"

namespace pb::kernels {

// Softmax cross-entropy with label smoothing and per-example weights.
//   logits: (N,K)   labels: (N) int32 in [0,K)   weights: (N) or nullptr (all 1)
// Target distribution q_i = (1 - smoothing) * onehot(label_i) + smoothing / K.
//   l_i  = -sum_k q_ik * log softmax(logits_i)_k
//   loss = sum_i w_i l_i / sum_i w_i      (0 when sum_i w_i == 0)
// A weight of 0 removes an example (a padded example in a partial eval batch) exactly.
// Writes *loss and probs: (N,K) = softmax(logits), saved for the backward pass.
// Labels are not range-checked here; the runtime validates them.
template <typename T>
void softmax_cross_entropy_forward_cpu(int64_t N, int64_t K, const T* logits, const int32_t* labels,
                                       const T* weights, T smoothing, T* loss, T* probs);
// dlogits_ik = dloss * w_i * (probs_ik - q_ik) / sum_i w_i
template <typename T>
void softmax_cross_entropy_backward_cpu(int64_t N, int64_t K, const T* probs, const int32_t* labels,
                                        const T* weights, T smoothing, T dloss, T* dlogits);

// Mean squared error over n elements: loss = sum_i (pred_i - target_i)^2 / n.
template <typename T>
void mse_forward_cpu(int64_t n, const T* pred, const T* target, T* loss);
// dpred = 2 dloss (pred - target) / n; dtarget = -dpred. Either may be nullptr.
template <typename T>
void mse_backward_cpu(int64_t n, const T* pred, const T* target, T dloss, T* dpred, T* dtarget);

}  // namespace pb::kernels
