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
// y = relu(a + b), fused (bitwise equal to add then relu_forward)
template <typename T>
void add_relu_cpu(int64_t n, const T* a, const T* b, T* y);
// dx = y > 0 ? dy : 0 with y the forward OUTPUT; the gradient of both a and b.
template <typename T>
void add_relu_backward_cpu(int64_t n, const T* y, const T* dy, T* dx);
// y = alpha * x
template <typename T>
void scale_cpu(int64_t n, T alpha, const T* x, T* y);
// y += alpha * x   (gradient accumulation)
template <typename T>
void axpy_cpu(int64_t n, T alpha, const T* x, T* y);
// y = value
template <typename T>
void fill_cpu(int64_t n, T value, T* y);

// CUDA versions (float). Each launch is followed by a launch check; n == 0 launches nothing.
// 16-byte aligned pointers take a float4 path; results are the same either way.
void relu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y);
void relu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy, float* dx);
void gelu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y);
void gelu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy, float* dx);
void add_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y);
void add_relu_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y);
void add_relu_backward_cuda(cudaStream_t stream, int64_t n, const float* y, const float* dy,
                            float* dx);
void scale_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y);
void axpy_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y);
void fill_cuda(cudaStream_t stream, int64_t n, float value, float* y);

}  // namespace pb::kernels
