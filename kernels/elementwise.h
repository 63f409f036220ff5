#pragma once
// Elementwise ops over n contiguous elements. In-place use (y == x) is allowed.
#include "kernels/common.h"

namespace pb::kernels {

template <typename T>
void relu_forward_cpu(int64_t n, const T* x, T* y);
// dx = x > 0 ? dy : 0   (x is the forward input)
template <typename T>
void relu_backward_cpu(int64_t n, const T* x, const T* dy, T* dx);

// GELU, exact erf form: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).
template <typename T>
void gelu_forward_cpu(int64_t n, const T* x, T* y);
template <typename T>
void gelu_backward_cpu(int64_t n, const T* x, const T* dy, T* dx);

// y = a + b
template <typename T>
void add_cpu(int64_t n, const T* a, const T* b, T* y);
// y = alpha * x
template <typename T>
void scale_cpu(int64_t n, T alpha, const T* x, T* y);
// y += alpha * x   (gradient accumulation)
template <typename T>
void axpy_cpu(int64_t n, T alpha, const T* x, T* y);
// y = value
template <typename T>
void fill_cpu(int64_t n, T value, T* y);

// CUDA versions (float). Each launch is followed by a launch check.
void relu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y);
void relu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy, float* dx);
void gelu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y);
void gelu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy, float* dx);
void add_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y);
void scale_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y);
void axpy_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y);
void fill_cuda(cudaStream_t stream, int64_t n, float value, float* y);

}  // namespace pb::kernels
