#pragma once
// Batch norm and ghost batch norm over x: (N,C,L), L = H*W for 2-D inputs and 1 for (N,C).
//
// Ghost batch norm (Hoffer et al. 2017, and the Tuning Playbook's "Batch normalization
// implementation details"): the batch is split into G = N / V consecutive groups of V examples
// (examples [g*V, (g+1)*V) form group g) and each group is normalised with its own mean and
// biased variance over its V*L values per channel, in the forward pass and in the backward pass
// (gradients flow only through the group's own statistics). This decouples the number of
// examples behind the normalising statistics from the batch size, which is what batch-size
// comparisons need. V >= N means one group: ordinary batch norm, bit for bit the same code path.
// N must be a multiple of V when V < N; the runtime rejects other batches with an error (padding
// or a smaller last group would silently change the statistics the playbook asks to hold fixed).
//
// Running statistics (eval mode) are one exponential moving average per step, fed with the mean
// over groups of the groups' statistics:
//   running_mean <- (1 - momentum) * running_mean + momentum * mean_g(mean_g)
//   running_var  <- (1 - momentum) * running_var  + momentum * mean_g(var_g * m / (m - 1))
// with m = V*L values per group (unbiased variance, as PyTorch stores it). For one group this is
// exactly PyTorch's BatchNorm update.
#include "kernels/common.h"

namespace pb::kernels {

struct BatchNormShape {
  int64_t N, C, L;
  int64_t V;  // virtual batch size; V >= N means ordinary batch norm
  PB_HOST_DEVICE int64_t group_size() const { return V < N ? V : N; }
  PB_HOST_DEVICE int64_t groups() const { return N / group_size(); }
};

// Training forward. gamma/beta: (C) or nullptr (scale 1 / shift 0).
// Writes y: (N,C,L), save_mean and save_invstd: (G,C) with invstd = 1/sqrt(var_biased + eps).
// running_mean/running_var: (C), updated as above when non-null.
template <typename T>
void batchnorm_forward_train_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                                 T eps, T momentum, T* y, T* save_mean, T* save_invstd,
                                 T* running_mean, T* running_var);

// Eval forward with running statistics: y = (x - rm) / sqrt(rv + eps) * gamma + beta.
template <typename T>
void batchnorm_forward_eval_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                                const T* running_mean, const T* running_var, T eps, T* y);

// Training backward (through the batch statistics). dy: (N,C,L).
// Writes dx: (N,C,L); dgamma, dbeta: (C) when non-null (summed over all groups).
template <typename T>
void batchnorm_backward_train_cpu(const BatchNormShape& s, const T* x, const T* dy, const T* gamma,
                                  const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                                  T* dbeta);

// Eval backward (statistics are constants): dx = dy * gamma / sqrt(rv + eps).
template <typename T>
void batchnorm_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* dy, const T* gamma,
                                 const T* running_mean, const T* running_var, T eps, T* dx,
                                 T* dgamma, T* dbeta);

// Fused batch norm + ReLU. Forward: the forward above, then y = max(y, 0) (y < 0 ? 0 : y, so a
// NaN stays NaN); bitwise equal to the unfused pair. Backward: y is the fused forward's OUTPUT;
// dy is masked first (dy' = y > 0 ? dy : 0) and then goes through the ordinary backward, again
// bitwise equal to relu_backward followed by the unfused backward.
template <typename T>
void batchnorm_relu_forward_train_cpu(const BatchNormShape& s, const T* x, const T* gamma,
                                      const T* beta, T eps, T momentum, T* y, T* save_mean,
                                      T* save_invstd, T* running_mean, T* running_var);
template <typename T>
void batchnorm_relu_forward_eval_cpu(const BatchNormShape& s, const T* x, const T* gamma,
                                     const T* beta, const T* running_mean, const T* running_var,
                                     T eps, T* y);
template <typename T>
void batchnorm_relu_backward_train_cpu(const BatchNormShape& s, const T* x, const T* y, const T* dy,
                                       const T* gamma, const T* save_mean, const T* save_invstd,
                                       T* dx, T* dgamma, T* dbeta);
template <typename T>
void batchnorm_relu_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* y, const T* dy,
                                      const T* gamma, const T* running_mean, const T* running_var,
                                      T eps, T* dx, T* dgamma, T* dbeta);

// CUDA versions (float, stream first; every pointer is device memory), same shapes, semantics
// and null-pointer options as the CPU functions; one launch each, no host sync, no workspace.
// The running statistics are updated by the kernel (mean over groups, then one EMA step), and
// dgamma/dbeta are summed over groups in group order: deterministic (no atomics).
// Numerics (kernels/cuda/batchnorm.cu): statistics from shifted sums in double (x minus the
// group's first value), so they agree with the CPU's double two-pass values to double rounding;
// y uses the CPU's float expression on the saved statistics; backward sums in double. Eval y and
// dx are bitwise the CPU's. Empty shapes launch nothing (the backward passes then zero dgamma and
// dbeta, as the CPU does). Limit: V*L (train) and N*L (eval) below 2^31 per channel.
void batchnorm_forward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                  const float* gamma, const float* beta, float eps, float momentum,
                                  float* y, float* save_mean, float* save_invstd,
                                  float* running_mean, float* running_var);
void batchnorm_forward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, float eps, float* y);
void batchnorm_backward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                   const float* dy, const float* gamma, const float* save_mean,
                                   const float* save_invstd, float* dx, float* dgamma,
                                   float* dbeta);
void batchnorm_backward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                  const float* dy, const float* gamma, const float* running_mean,
                                  const float* running_var, float eps, float* dx, float* dgamma,
                                  float* dbeta);
void batchnorm_relu_forward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                       const float* gamma, const float* beta, float eps,
                                       float momentum, float* y, float* save_mean,
                                       float* save_invstd, float* running_mean, float* running_var);
void batchnorm_relu_forward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                      const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var,
                                      float eps, float* y);
void batchnorm_relu_backward_train_cuda(cudaStream_t stream, const BatchNormShape& s,
                                        const float* x, const float* y, const float* dy,
                                        const float* gamma, const float* save_mean,
                                        const float* save_invstd, float* dx, float* dgamma,
                                        float* dbeta);
void batchnorm_relu_backward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                       const float* y, const float* dy, const float* gamma,
                                       const float* running_mean, const float* running_var,
                                       float eps, float* dx, float* dgamma, float* dbeta);

}  // namespace pb::kernels
