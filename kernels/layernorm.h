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

// CUDA versions (float, stream first, device pointers), same shapes and semantics. Statistics in
// double (shifted sums: the CPU's values to double rounding); y and dx use the CPU's expressions;
// dgamma/dbeta are summed over rows by a column kernel in a fixed order (deterministic, no
// atomics). No host sync, no workspace. M == 0 or D == 0 launches nothing, except that the
// backward still zeroes dgamma/dbeta when M == 0 (as the CPU does). M <= 2^31 - 1.
void layernorm_forward_cuda(cudaStream_t stream, int64_t M, int64_t D, const float* x,
                            const float* gamma, const float* beta, float eps, float* y,
                            float* save_mean, float* save_invstd);
void layernorm_backward_cuda(cudaStream_t stream, int64_t M, int64_t D, const float* x,
                             const float* dy, const float* gamma, const float* save_mean,
                             const float* save_invstd, float* dx, float* dgamma, float* dbeta);

}  // namespace pb::kernels
