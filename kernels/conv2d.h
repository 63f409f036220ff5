#pragma once
// 2-D convolution (cross-correlation, as in PyTorch), NCHW, no dilation, no groups.
//   x: (N,C,H,W)   w: (K,C,R,S)   bias: (K) or nullptr   y: (N,K,P,Q)
//   P = (H + 2*pad_h - R) / stride_h + 1,   Q = (W + 2*pad_w - S) / stride_w + 1
// FLOPs of each of forward, backward-data, backward-weight: 2*N*K*P*Q*C*R*S.
#include "kernels/common.h"

namespace pb::kernels {

struct Conv2dShape {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // filters
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  PB_HOST_DEVICE int64_t P() const { return (H + 2 * pad_h - R) / stride_h + 1; }
  PB_HOST_DEVICE int64_t Q() const { return (W + 2 * pad_w - S) / stride_w + 1; }
  double flops() const { return 2.0 * N * K * P() * Q() * C * R * S; }
};

template <typename T>
void conv2d_forward_cpu(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// dy: (N,K,P,Q) -> dx: (N,C,H,W)
template <typename T>
void conv2d_backward_data_cpu(const Conv2dShape& s, const T* dy, const T* w, T* dx);

// x, dy -> dw: (K,C,R,S); dbias: (K) written when non-null.
template <typename T>
void conv2d_backward_weight_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias);

// CUDA versions (float), same semantics, enqueued on `stream`: implicit GEMM with pure FP32 FFMA,
// no im2col buffer (kernels/cuda/conv2d.cu). Each tensor must hold fewer than 2^31 elements.
void conv2d_forward_cuda(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                         const float* bias, float* y);
void conv2d_backward_data_cuda(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                               const float* w, float* dx);

// Backward-weight splits the N*P*Q reduction across blocks and sums the partial results in a
// fixed order, so dw is deterministic (bit-identical from run to run for a given shape). The
// partial sums need a device workspace of conv2d_backward_weight_cuda_workspace_bytes(s) bytes
// (a function of the shape only; 0 when the shape is not split, and then `workspace` may be
// nullptr). The workspace must not be used by other work while this call runs on `stream`.
int64_t conv2d_backward_weight_cuda_workspace_bytes(const Conv2dShape& s);
void conv2d_backward_weight_cuda(cudaStream_t stream, const Conv2dShape& s, const float* x,
                                 const float* dy, float* dw, float* dbias, void* workspace);

}  // namespace pb::kernels
