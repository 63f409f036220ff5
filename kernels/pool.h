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

}  // namespace pb::kernels
