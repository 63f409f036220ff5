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

}  // namespace pb::kernels
