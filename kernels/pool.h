#pragma once
// Pooling over NCHW planes.
//   x: (N,C,H,W) -> y: (N,C,P,Q), P = (H + 2*pad_h - kh) / stride_h + 1 (likewise Q)
// Padding never wins a max (padded cells are -inf). Average pooling counts padded cells in the
// divisor (divides by kh*kw, PyTorch's count_include_pad=True default).
#include "kernels/common.h"

namespace pb::kernels {

struct Pool2dShape {
  int64_t N, C, H, W;
  int64_t kh, kw;
  int64_t stride_h, stride_w, pad_h = 0, pad_w = 0;
  PB_HOST_DEVICE int64_t P() const { return (H + 2 * pad_h - kh) / stride_h + 1; }
  PB_HOST_DEVICE int64_t Q() const { return (W + 2 * pad_w - kw) / stride_w + 1; }
};

// argmax: (N,C,P,Q) index h*W+w of the winning input cell within its plane (first max wins on
// ties); may be nullptr when no backward follows.
template <typename T>
void max_pool2d_forward_cpu(const Pool2dShape& s, const T* x, T* y, int32_t* argmax);
// dy: (N,C,P,Q), argmax from the forward -> dx: (N,C,H,W)
template <typename T>
void max_pool2d_backward_cpu(const Pool2dShape& s, const T* dy, const int32_t* argmax, T* dx);

template <typename T>
void avg_pool2d_forward_cpu(const Pool2dShape& s, const T* x, T* y);
template <typename T>
void avg_pool2d_backward_cpu(const Pool2dShape& s, const T* dy, T* dx);

// Global average pool: x: (N,C,L) -> y: (N,C), L = H*W.
template <typename T>
void global_avg_pool_forward_cpu(int64_t N, int64_t C, int64_t L, const T* x, T* y);
template <typename T>
void global_avg_pool_backward_cpu(int64_t N, int64_t C, int64_t L, const T* dy, T* dx);

// CUDA versions (float, stream first), same shapes and semantics; invalid shapes throw
// std::invalid_argument as on the CPU (and planes of 2^31 or more cells). max/avg pooling and
// their backward passes (a gather over the covering windows, in the CPU's order) equal the CPU
// kernels bit for bit, overlapping windows included; global_avg_pool_forward_cuda sums in double
// (within the CPU float sum's rounding); its backward is bitwise. N*C == 0 launches nothing.
void max_pool2d_forward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* x, float* y,
                             int32_t* argmax);
void max_pool2d_backward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* dy,
                              const int32_t* argmax, float* dx);
void avg_pool2d_forward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* x, float* y);
void avg_pool2d_backward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* dy,
                              float* dx);
void global_avg_pool_forward_cuda(cudaStream_t stream, int64_t N, int64_t C, int64_t L,
                                  const float* x, float* y);
void global_avg_pool_backward_cuda(cudaStream_t stream, int64_t N, int64_t C, int64_t L,
                                   const float* dy, float* dx);

}  // namespace pb::kernels
