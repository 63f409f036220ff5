// CUDA elementwise kernels (float): one grid-stride kernel per op, each computing the same
// function as its CPU reference in kernels/cpu/elementwise.cpp.
//
// Results vs the CPU kernels: relu, add, scale and fill are single IEEE operations and match
// bit for bit. axpy may differ by 1 ulp because nvcc contracts y + alpha * x into one fma while
// the x86-64 CPU build rounds the product first. gelu uses normcdff (max 5 ulp per the CUDA Math
// API) and expf (2 ulp) where the CPU uses std::erfc and std::exp in float (about 1 ulp each),
// so expect a difference of a few ulp of the result; tests/cuda/test_elementwise_cuda.cpp allows
// 1e-6 absolute + 4e-6 relative.
//
// Outputs may alias inputs (in-place use), so no pointer is marked __restrict__.
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/elementwise.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops need only enough blocks to fill the GPU: 4096 blocks of 256 threads is 1M
// threads, several waves on any current GPU, and far below the grid-size limit.
constexpr int64_t kMaxBlocks = 4096;

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

constexpr float kInvSqrt2Pi = 0.39894228040143267794f;  // 1/sqrt(2*pi)

// (n) y = x < 0 ? 0 : x   (NaN stays NaN, like the CPU kernel; fmaxf would drop it)
__global__ void relu_forward_kernel(int64_t n, const float* x, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = v < 0.0f ? 0.0f : v;
  }
}

// (n) dx = x > 0 ? dy : 0
__global__ void relu_backward_kernel(int64_t n, const float* x, const float* dy, float* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
  }
}

// (n) y = x * Phi(x); normcdff keeps relative precision in the left tail (no 1 + erf cancellation).
__global__ void gelu_forward_kernel(int64_t n, const float* x, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = v * normcdff(v);
  }
}

// (n) dx = dy * (Phi(x) + x * phi(x))
__global__ void gelu_backward_kernel(int64_t n, const float* x, const float* dy, float* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
    dx[i] = dy[i] * (normcdff(v) + v * pdf);
  }
}

// (n) y = a + b
__global__ void add_kernel(int64_t n, const float* a, const float* b, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = a[i] + b[i];
  }
}

// (n) y = alpha * x
__global__ void scale_kernel(int64_t n, float alpha, const float* x, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = alpha * x[i];
  }
}

// (n) y += alpha * x
__global__ void axpy_kernel(int64_t n, float alpha, const float* x, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += alpha * x[i];
  }
}

// (n) y = value
__global__ void fill_kernel(int64_t n, float value, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = value;
  }
}

}  // namespace

void relu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  relu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, x, y);
  PB_CUDA_LAUNCH_CHECK();
}

void relu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy,
                        float* dx) {
  if (n <= 0) return;
  relu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, x, dy, dx);
  PB_CUDA_LAUNCH_CHECK();
}

void gelu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, x, y);
  PB_CUDA_LAUNCH_CHECK();
}

void gelu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy,
                        float* dx) {
  if (n <= 0) return;
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, x, dy, dx);
  PB_CUDA_LAUNCH_CHECK();
}

void add_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, a, b, y);
  PB_CUDA_LAUNCH_CHECK();
}

void scale_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, alpha, x, y);
  PB_CUDA_LAUNCH_CHECK();
}

void axpy_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y) {
  if (n <= 0) return;
  axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, alpha, x, y);
  PB_CUDA_LAUNCH_CHECK();
}

void fill_cuda(cudaStream_t stream, int64_t n, float value, float* y) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, value, y);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
