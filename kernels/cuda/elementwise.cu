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
// add_relu is add then relu in one pass (bitwise equal to the two kernels); add_relu_backward is
// relu_backward applied to the sum's output y (y > 0 iff a + b > 0).
//
// Every op is one functor run by two kernels: a float4 kernel when all its pointers are 16-byte
// aligned (n / 4 vectors, grid-stride, then the n % 4 tail elements by the first threads) and a
// scalar grid-stride kernel otherwise. Both apply the same functor to each element, so the result
// does not depend on the path. Bytes: each input read once, the output written once.
//
// Outputs may alias inputs exactly (in-place use: each thread reads its elements before writing
// them), so no pointer is marked __restrict__. Partially overlapping buffers are not supported.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/elementwise.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops need only enough blocks to fill the GPU: 4096 blocks of 256 threads is 1M
// threads, several waves on any current GPU, and far below the grid-size limit.
constexpr int64_t kMaxBlocks = 4096;

int blocks_for(int64_t n) {
  return static_cast<int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

constexpr float kInvSqrt2Pi = 0.39894228040143267794f;  // 1/sqrt(2*pi)

// ---- ops: y_i = op(a_i[, b_i]) ------------------------------------------------------------------

// y = x < 0 ? 0 : x   (NaN stays NaN, like the CPU kernel; fmaxf would drop it)
struct ReluOp {
  __device__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
// dx = x > 0 ? dy : 0
struct ReluBackwardOp {
  __device__ float operator()(float x, float dy) const { return x > 0.0f ? dy : 0.0f; }
};
// y = x * Phi(x); normcdff keeps relative precision in the left tail (no 1 + erf cancellation).
struct GeluOp {
  __device__ float operator()(float x) const { return x * normcdff(x); }
};
// dx = dy * (Phi(x) + x * phi(x))
struct GeluBackwardOp {
  __device__ float operator()(float x, float dy) const {
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    return dy * (normcdff(x) + x * pdf);
  }
};
// y = a + b
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
// y = relu(a + b), the sum rounded first as in add then relu
struct AddReluOp {
  __device__ float operator()(float a, float b) const {
    const float s = a + b;
    return s < 0.0f ? 0.0f : s;
  }
};
// y = alpha * x
struct ScaleOp {
  float alpha;
  __device__ float operator()(float x) const { return alpha * x; }
};
// y = y + alpha * x  (a = x, b = y)
struct AxpyOp {
  float alpha;
  __device__ float operator()(float x, float y) const { return y + alpha * x; }
};
// y = value
struct FillOp {
  float value;
  __device__ float operator()() const { return value; }
};

template <int kArity, typename Op>
__device__ __forceinline__ float apply(const Op& op, float a, float b) {
  if constexpr (kArity == 0) {
    return op();
  } else if constexpr (kArity == 1) {
    return op(a);
  } else {
    return op(a, b);
  }
}

// (n) y = op(a[, b]) with float4 accesses; a, b (when used) and y 16-byte aligned.
template <int kArity, typename Op>
__global__ __launch_bounds__(kThreads) void map_vec4_kernel(int64_t n, const float* a,
                                                            const float* b, float* y, Op op) {
  const int64_t n4 = n / 4;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (int64_t i = tid; i < n4; i += stride) {
    float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
    if constexpr (kArity >= 1) va = a4[i];
    if constexpr (kArity >= 2) vb = b4[i];
    float4 r;
    r.x = apply<kArity>(op, va.x, vb.x);
    r.y = apply<kArity>(op, va.y, vb.y);
    r.z = apply<kArity>(op, va.z, vb.z);
    r.w = apply<kArity>(op, va.w, vb.w);
    y4[i] = r;
  }
  const int64_t t = n4 * 4 + tid;  // the n % 4 tail elements
  if (t < n) {
    float va = 0.f, vb = 0.f;
    if constexpr (kArity >= 1) va = a[t];
    if constexpr (kArity >= 2) vb = b[t];
    y[t] = apply<kArity>(op, va, vb);
  }
}

// (n) y = op(a[, b]), one element per thread per step (any alignment).
template <int kArity, typename Op>
__global__ __launch_bounds__(kThreads) void map_scalar_kernel(int64_t n, const float* a,
                                                              const float* b, float* y, Op op) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float va = 0.f, vb = 0.f;
    if constexpr (kArity >= 1) va = a[i];
    if constexpr (kArity >= 2) vb = b[i];
    y[i] = apply<kArity>(op, va, vb);
  }
}

template <int kArity, typename Op>
void launch_map(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y, Op op) {
  if (n <= 0) return;
  const bool vec = aligned16(y) && (kArity < 1 || aligned16(a)) && (kArity < 2 || aligned16(b));
  if (vec) {
    map_vec4_kernel<kArity><<<blocks_for((n + 3) / 4), kThreads, 0, stream>>>(n, a, b, y, op);
  } else {
    map_scalar_kernel<kArity><<<blocks_for(n), kThreads, 0, stream>>>(n, a, b, y, op);
  }
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void relu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y) {
  launch_map<1>(stream, n, x, nullptr, y, ReluOp{});
}

void relu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy,
                        float* dx) {
  launch_map<2>(stream, n, x, dy, dx, ReluBackwardOp{});
}

void gelu_forward_cuda(cudaStream_t stream, int64_t n, const float* x, float* y) {
  launch_map<1>(stream, n, x, nullptr, y, GeluOp{});
}

void gelu_backward_cuda(cudaStream_t stream, int64_t n, const float* x, const float* dy,
                        float* dx) {
  launch_map<2>(stream, n, x, dy, dx, GeluBackwardOp{});
}

void add_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y) {
  launch_map<2>(stream, n, a, b, y, AddOp{});
}

void add_relu_cuda(cudaStream_t stream, int64_t n, const float* a, const float* b, float* y) {
  launch_map<2>(stream, n, a, b, y, AddReluOp{});
}

void add_relu_backward_cuda(cudaStream_t stream, int64_t n, const float* y, const float* dy,
                            float* dx) {
  launch_map<2>(stream, n, y, dy, dx, ReluBackwardOp{});
}

void scale_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y) {
  launch_map<1>(stream, n, x, nullptr, y, ScaleOp{alpha});
}

void axpy_cuda(cudaStream_t stream, int64_t n, float alpha, const float* x, float* y) {
  launch_map<2>(stream, n, x, y, y, AxpyOp{alpha});
}

void fill_cuda(cudaStream_t stream, int64_t n, float value, float* y) {
  launch_map<0>(stream, n, nullptr, nullptr, y, FillOp{value});
}

}  // namespace pb::kernels
