// CUDA pooling (float), the same functions as kernels/cpu/pool.cpp.
//   x, dx: (N,C,H,W)   y, dy, argmax: (N,C,P,Q)
//
// Design
//   Window kernels (max/avg forward): one thread per output cell. Grid (ceil(P*Q / 256), planes):
//   blockIdx.y walks the N*C planes (grid-stride when there are more than 65535), so only the
//   in-plane index needs a (32-bit) division. The window scan is the CPU's, in the same order
//   with the same comparisons, so y and argmax match the CPU bit for bit (first max wins ties, the
//   first NaN wins, an all-padding window gives -inf and argmax -1).
//   Backward kernels gather: one thread per input cell loops over the windows that cover it, in
//   the row-major (p, q) order in which the CPU scatters, so each dx is the same float sum in the
//   same order (bitwise equal to the CPU, deterministic, no atomics), overlapping windows
//   included. Max: adds dy[p,q] when argmax[p,q] is this cell. Avg: adds dy[p,q] * (1/(kh*kw)),
//   the product rounded first (no fma), as on the CPU.
//   Global average pool: one warp per (n,c) row of L values; the forward sums in double (the CPU
//   sums in T, so float results differ from the CPU's by its rounding, ~L ulp at worst), the
//   backward writes dy * (1/L) (bitwise equal to the CPU).
// Bytes (fewest): max fwd reads x, writes y and argmax; max bwd reads dy and argmax, writes dx;
// avg likewise without argmax; global reads x / writes y (and the reverse). The gather re-reads
// dy/argmax of overlapping windows, from L1/L2.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/pool.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridY = 65535;

void check_shape(const char* who, const Pool2dShape& s) {
  const auto dims = [&] {
    return " (N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) +
           " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) +
           " kernel=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
           " stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
           " pad=" + std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w) + ")";
  };
  if (s.N < 0 || s.C < 0 || s.H < 1 || s.W < 1 || s.kh < 1 || s.kw < 1 || s.stride_h < 1 ||
      s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0) {
    throw std::invalid_argument(std::string(who) + ": invalid pooling shape" + dims());
  }
  if (s.H + 2 * s.pad_h < s.kh || s.W + 2 * s.pad_w < s.kw) {
    throw std::invalid_argument(std::string(who) + ": window larger than the padded input" +
                                dims());
  }
  // In-plane indices (and the int32 argmax) are 32-bit on the device.
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (s.H * s.W > kMax || s.P() * s.Q() > kMax || s.H + 2 * s.pad_h > kMax ||
      s.W + 2 * s.pad_w > kMax) {
    throw std::invalid_argument(std::string(who) + ": plane too large for 32-bit indices" + dims());
  }
}

// Plain-int copy of the shape for the device (all in-plane quantities fit 32 bits).
struct PoolParams {
  int H, W, P, Q, kh, kw, sh, sw, ph, pw;
  int64_t planes;
};

PoolParams make_params(const Pool2dShape& s) {
  return PoolParams{static_cast<int>(s.H),
                    static_cast<int>(s.W),
                    static_cast<int>(s.P()),
                    static_cast<int>(s.Q()),
                    static_cast<int>(s.kh),
                    static_cast<int>(s.kw),
                    static_cast<int>(s.stride_h),
                    static_cast<int>(s.stride_w),
                    static_cast<int>(s.pad_h),
                    static_cast<int>(s.pad_w),
                    s.N * s.C};
}

dim3 grid_for(int64_t per_plane, int64_t planes) {
  const int64_t gx = (per_plane + kThreads - 1) / kThreads;
  const int64_t gy = std::min<int64_t>(planes, kMaxGridY);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), 1);
}

// Rows [h0, h1) of the window of output row p, clipped to the input (likewise columns).
__device__ __forceinline__ void clip(int p, int stride, int pad, int k, int H, int& h0, int& h1) {
  const int h = p * stride - pad;
  h0 = h > 0 ? h : 0;
  h1 = h + k < H ? h + k : H;
}

// Output rows p whose window covers input row h: [p0, p1] (empty when p0 > p1).
__device__ __forceinline__ void covering(int h, int stride, int pad, int k, int P, int& p0,
                                         int& p1) {
  const int num = h + pad - k + 1;  // p * stride >= num
  p0 = num > 0 ? (num + stride - 1) / stride : 0;
  const int hi = (h + pad) / stride;  // p * stride <= h + pad
  p1 = hi < P - 1 ? hi : P - 1;
}

// y, argmax: (planes, P, Q); one thread per output cell.
__global__ __launch_bounds__(kThreads) void max_pool_forward_kernel(PoolParams s,
                                                                    const float* __restrict__ x,
                                                                    float* __restrict__ y,
                                                                    int32_t* __restrict__ argmax) {
  const int PQ = s.P * s.Q;
  const int o = blockIdx.x * kThreads + threadIdx.x;
  if (o >= PQ) return;
  const int p = o / s.Q, q = o - p * s.Q;
  int h0, h1, w0, w1;
  clip(p, s.sh, s.ph, s.kh, s.H, h0, h1);
  clip(q, s.sw, s.pw, s.kw, s.W, w0, w1);
  for (int64_t plane = blockIdx.y; plane < s.planes; plane += gridDim.y) {
    const float* x_pl = x + plane * s.H * s.W;  // (H,W)
    float best = -INFINITY;
    int best_idx = -1;  // stays -1 only for a window that is all padding
    for (int h = h0; h < h1; ++h) {
      for (int w = w0; w < w1; ++w) {
        const float v = x_pl[h * s.W + w];
        if (best_idx < 0 || v > best || (isnan(v) && !isnan(best))) {
          best = v;
          best_idx = h * s.W + w;
        }
      }
    }
    y[plane * PQ + o] = best;
    if (argmax != nullptr) argmax[plane * PQ + o] = best_idx;
  }
}

// dx: (planes, H, W); one thread per input cell, gathering from the windows that chose it.
__global__ __launch_bounds__(kThreads) void max_pool_backward_kernel(
    PoolParams s, const float* __restrict__ dy, const int32_t* __restrict__ argmax,
    float* __restrict__ dx) {
  const int HW = s.H * s.W, PQ = s.P * s.Q;
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= HW) return;
  const int h = i / s.W, w = i - h * s.W;
  int p0, p1, q0, q1;
  covering(h, s.sh, s.ph, s.kh, s.P, p0, p1);
  covering(w, s.sw, s.pw, s.kw, s.Q, q0, q1);
  for (int64_t plane = blockIdx.y; plane < s.planes; plane += gridDim.y) {
    const float* dy_pl = dy + plane * PQ;        // (P,Q)
    const int32_t* am_pl = argmax + plane * PQ;  // (P,Q)
    float acc = 0.0f;
    for (int p = p0; p <= p1; ++p) {
      for (int q = q0; q <= q1; ++q) {
        if (am_pl[p * s.Q + q] == i) acc += dy_pl[p * s.Q + q];
      }
    }
    dx[plane * HW + i] = acc;
  }
}

__global__ __launch_bounds__(kThreads) void avg_pool_forward_kernel(PoolParams s, float inv_area,
                                                                    const float* __restrict__ x,
                                                                    float* __restrict__ y) {
  const int PQ = s.P * s.Q;
  const int o = blockIdx.x * kThreads + threadIdx.x;
  if (o >= PQ) return;
  const int p = o / s.Q, q = o - p * s.Q;
  int h0, h1, w0, w1;
  clip(p, s.sh, s.ph, s.kh, s.H, h0, h1);
  clip(q, s.sw, s.pw, s.kw, s.W, w0, w1);
  for (int64_t plane = blockIdx.y; plane < s.planes; plane += gridDim.y) {
    const float* x_pl = x + plane * s.H * s.W;  // (H,W)
    float sum = 0.0f;
    for (int h = h0; h < h1; ++h) {
      for (int w = w0; w < w1; ++w) sum += x_pl[h * s.W + w];
    }
    y[plane * PQ + o] = sum * inv_area;
  }
}

__global__ __launch_bounds__(kThreads) void avg_pool_backward_kernel(PoolParams s, float inv_area,
                                                                     const float* __restrict__ dy,
                                                                     float* __restrict__ dx) {
  const int HW = s.H * s.W, PQ = s.P * s.Q;
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= HW) return;
  const int h = i / s.W, w = i - h * s.W;
  int p0, p1, q0, q1;
  covering(h, s.sh, s.ph, s.kh, s.P, p0, p1);
  covering(w, s.sw, s.pw, s.kw, s.Q, q0, q1);
  for (int64_t plane = blockIdx.y; plane < s.planes; plane += gridDim.y) {
    const float* dy_pl = dy + plane * PQ;  // (P,Q)
    float acc = 0.0f;
    for (int p = p0; p <= p1; ++p) {
      for (int q = q0; q <= q1; ++q) acc += __fmul_rn(dy_pl[p * s.Q + q], inv_area);
    }
    dx[plane * HW + i] = acc;
  }
}

// y(rows) = mean of x(rows, L); one warp per row, double accumulation.
__global__ __launch_bounds__(kThreads) void global_avg_pool_forward_kernel(
    int64_t rows, int64_t L, const float* __restrict__ x, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kThreads / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;        // whole warps leave together
  const float* xr = x + row * L;  // (L)
  double acc = 0.0;
  for (int64_t l = lane; l < L; l += 32) acc += static_cast<double>(xr[l]);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  if (lane == 0) y[row] = static_cast<float>(acc / static_cast<double>(L));
}

// dx(rows, L) = dy(rows) * (1/L); one warp per row.
__global__ __launch_bounds__(kThreads) void global_avg_pool_backward_kernel(
    int64_t rows, int64_t L, float inv_l, const float* __restrict__ dy, float* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kThreads / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const float g = dy[row] * inv_l;
  float* dxr = dx + row * L;  // (L)
  for (int64_t l = lane; l < L; l += 32) dxr[l] = g;
}

}  // namespace

void max_pool2d_forward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* x, float* y,
                             int32_t* argmax) {
  check_shape("max_pool2d_forward_cuda", s);
  const PoolParams p = make_params(s);
  if (p.planes == 0) return;
  max_pool_forward_kernel<<<grid_for(int64_t{p.P} * p.Q, p.planes), kThreads, 0, stream>>>(p, x, y,
                                                                                           argmax);
  PB_CUDA_LAUNCH_CHECK();
}

void max_pool2d_backward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* dy,
                              const int32_t* argmax, float* dx) {
  check_shape("max_pool2d_backward_cuda", s);
  const PoolParams p = make_params(s);
  if (p.planes == 0) return;
  max_pool_backward_kernel<<<grid_for(int64_t{p.H} * p.W, p.planes), kThreads, 0, stream>>>(
      p, dy, argmax, dx);
  PB_CUDA_LAUNCH_CHECK();
}

void avg_pool2d_forward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* x, float* y) {
  check_shape("avg_pool2d_forward_cuda", s);
  const PoolParams p = make_params(s);
  if (p.planes == 0) return;
  const float inv_area = 1.0f / static_cast<float>(s.kh * s.kw);  // as the CPU, in float
  avg_pool_forward_kernel<<<grid_for(int64_t{p.P} * p.Q, p.planes), kThreads, 0, stream>>>(
      p, inv_area, x, y);
  PB_CUDA_LAUNCH_CHECK();
}

void avg_pool2d_backward_cuda(cudaStream_t stream, const Pool2dShape& s, const float* dy,
                              float* dx) {
  check_shape("avg_pool2d_backward_cuda", s);
  const PoolParams p = make_params(s);
  if (p.planes == 0) return;
  const float inv_area = 1.0f / static_cast<float>(s.kh * s.kw);
  avg_pool_backward_kernel<<<grid_for(int64_t{p.H} * p.W, p.planes), kThreads, 0, stream>>>(
      p, inv_area, dy, dx);
  PB_CUDA_LAUNCH_CHECK();
}

void global_avg_pool_forward_cuda(cudaStream_t stream, int64_t N, int64_t C, int64_t L,
                                  const float* x, float* y) {
  if (L < 1) throw std::invalid_argument("global_avg_pool_forward_cuda: L must be >= 1");
  const int64_t rows = N * C;
  if (rows <= 0) return;
  const int64_t blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
  global_avg_pool_forward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(rows, L, x,
                                                                                         y);
  PB_CUDA_LAUNCH_CHECK();
}

void global_avg_pool_backward_cuda(cudaStream_t stream, int64_t N, int64_t C, int64_t L,
                                   const float* dy, float* dx) {
  if (L < 1) throw std::invalid_argument("global_avg_pool_backward_cuda: L must be >= 1");
  const int64_t rows = N * C;
  if (rows <= 0) return;
  const int64_t blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
  const float inv_l = 1.0f / static_cast<float>(L);  // as the CPU, in float
  global_avg_pool_backward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      rows, L, inv_l, dy, dx);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
