#pragma once
// Fully connected layer: y = x w^T + b.
//   x: (M,K)   w: (N,K)   b: (N) or nullptr   y: (M,N)
#include "kernels/common.h"

namespace pb::kernels {

template <typename T>
void linear_forward_cpu(int64_t M, int64_t N, int64_t K, const T* x, const T* w, const T* b, T* y);

// dy: (M,N). Each of dx (M,K), dw (N,K), db (N) is written when non-null.
template <typename T>
void linear_backward_cpu(int64_t M, int64_t N, int64_t K, const T* x, const T* w, const T* dy,
                         T* dx, T* dw, T* db);

// CUDA versions (float), same semantics, enqueued on `stream`: three gemm_cuda calls plus a bias
// broadcast and a deterministic column sum for db (kernels/cuda/linear.cu).
void linear_forward_cuda(cudaStream_t stream, int64_t M, int64_t N, int64_t K, const float* x,
                         const float* w, const float* b, float* y);
void linear_backward_cuda(cudaStream_t stream, int64_t M, int64_t N, int64_t K, const float* x,
                          const float* w, const float* dy, float* dx, float* dw, float* db);

}  // namespace pb::kernels
