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

}  // namespace pb::kernels
