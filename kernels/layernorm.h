#pragma once
// Layer norm over the last dimension: x: (M,D), each row normalised by its own mean and biased
// variance; y = (x - mean) * invstd * gamma + beta, gamma/beta: (D) or nullptr.
#include "kernels/common.h"

namespace pb::kernels {

// Writes y: (M,D), save_mean and save_invstd: (M).
template <typename T>
void layernorm_forward_cpu(int64_t M, int64_t D, const T* x, const T* gamma, const T* beta, T eps,
                           T* y, T* save_mean, T* save_invstd);

// Writes dx: (M,D); dgamma, dbeta: (D) when non-null.
template <typename T>
void layernorm_backward_cpu(int64_t M, int64_t D, const T* x, const T* dy, const T* gamma,
                            const T* save_mean, const T* save_invstd, T* dx, T* dgamma, T* dbeta);

}  // namespace pb::kernels
