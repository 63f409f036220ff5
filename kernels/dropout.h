#pragma once
// Inverted dropout with a counter-based mask: element i is kept iff
//   philox_uniform(seed, offset, i) >= p,
// and kept elements are scaled by 1/(1-p). The mask is a pure function of (seed, offset, i), so
// the backward pass recomputes it instead of storing it, and CPU and CUDA agree element for
// element. 0 <= p < 1.
#include "kernels/common.h"

namespace pb::kernels {

template <typename T>
void dropout_forward_cpu(int64_t n, float p, uint64_t seed, uint64_t offset, const T* x, T* y);
template <typename T>
void dropout_backward_cpu(int64_t n, float p, uint64_t seed, uint64_t offset, const T* dy, T* dx);

void dropout_forward_cuda(cudaStream_t stream, int64_t n, float p, uint64_t seed, uint64_t offset,
                          const float* x, float* y);
void dropout_backward_cuda(cudaStream_t stream, int64_t n, float p, uint64_t seed, uint64_t offset,
                           const float* dy, float* dx);

}  // namespace pb::kernels
