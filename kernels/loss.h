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
// Labels are not range-checked by the CPU kernel; the runtime validates them. The CUDA kernel
// checks them itself (no host sync): see softmax_cross_entropy_forward_cuda.
template <typename T>
void softmax_cross_entropy_forward_cpu(int64_t N, int64_t K, const T* logits, const int32_t* labels,
                                       const T* weights, T smoothing, T* loss, T* probs);
// dlogits_ik = dloss * w_i * (probs_ik - q_ik) / sum_i w_i
// dloss points to ONE element, the upstream gradient of the loss (host memory for the CPU
// kernels, device memory for the CUDA ones, so the GPU path never reads it back to the host).
template <typename T>
void softmax_cross_entropy_backward_cpu(int64_t N, int64_t K, const T* probs, const int32_t* labels,
                                        const T* weights, T smoothing, const T* dloss, T* dlogits);

// Mean squared error over n elements: loss = sum_i (pred_i - target_i)^2 / n.
template <typename T>
void mse_forward_cpu(int64_t n, const T* pred, const T* target, T* loss);
// dpred = 2 dloss (pred - target) / n; dtarget = -dpred. Either may be nullptr. dloss: one
// element, as above.
template <typename T>
void mse_backward_cpu(int64_t n, const T* pred, const T* target, const T* dloss, T* dpred,
                      T* dtarget);

// CUDA versions (float, stream first; every pointer, *loss and *dloss included, is device
// memory; nothing is read back to the host). The forwards reduce through `workspace`, a device
// buffer of reduce_cuda_workspace_bytes() bytes (kernels/reduce.h), deterministically (per-block
// partials in double, then one block combines them in a fixed order; no atomics).
//
// Cross-entropy forward: same outputs as the CPU kernel, and additionally: if any example with
// w_i != 0 has a label outside [0, K), *loss is set to NaN (the label is then never used to
// index). The runtime relies on this to detect bad labels without a host check. probs are
// computed in float (expf of x - max, times 1 / sum in double): within ~1e-6 relative of the
// CPU's double-computed values; the loss uses double sums. K >= 1 (std::invalid_argument).
// N == 0 only clears *loss.
void softmax_cross_entropy_forward_cuda(cudaStream_t stream, int64_t N, int64_t K,
                                        const float* logits, const int32_t* labels,
                                        const float* weights, float smoothing, float* loss,
                                        float* probs, void* workspace);
// Same as the CPU kernel (invalid labels never match a class: such rows get dloss*w*probs/sum w).
// workspace: reduce_cuda_workspace_bytes() bytes, used for sum_i w_i when weights != nullptr.
void softmax_cross_entropy_backward_cuda(cudaStream_t stream, int64_t N, int64_t K,
                                         const float* probs, const int32_t* labels,
                                         const float* weights, float smoothing, const float* dloss,
                                         float* dlogits, void* workspace);
// n == 0 only clears *loss.
void mse_forward_cuda(cudaStream_t stream, int64_t n, const float* pred, const float* target,
                      float* loss, void* workspace);
void mse_backward_cuda(cudaStream_t stream, int64_t n, const float* pred, const float* target,
                       const float* dloss, float* dpred, float* dtarget);

}  // namespace pb::kernels
