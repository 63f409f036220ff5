// CUDA layer norm over the last dimension (float), the same functions as
// kernels/cpu/layernorm.cpp.   x, y, dy, dx: (M,D)   save_mean, save_invstd: (M)   gamma, beta,
// dgamma, dbeta: (D)
//
// Design
//   Row kernels (forward; backward dx): a warp per row when D <= 1024 (8 rows per 256-thread
//   block), a whole 256-thread block per row above. Each row: one read for the statistics (or
//   the two backward sums), a second read for the output, the row being in L1/L2 by then.
//     forward  shifted sums in double (K = the row's first value; mean = K + s1/D,
//              var = (s2 - s1^2/D)/D), as in batchnorm.cu: the CPU's two-pass double statistics
//              to double rounding, in one read. y = ((x - mean) * invstd) * gamma + beta in float,
//              each operation rounded as on the CPU (bitwise, given the same saved statistics).
//     backward g = dy * gamma and xhat = (x - mean) * invstd (float, as on the CPU) in double;
//              dx = (float)(invstd * ((g - mean_g) - xhat * mean_g_xhat)), each double
//              operation rounded as on the CPU.
//   dgamma/dbeta: a column kernel, 32 columns per block and 16 row-strided partial sums per
//   column (double), combined in a fixed order: deterministic, no atomics, no workspace.
//   Summation orders are functions of the shape only.
// Bytes: forward reads x (twice, the second from cache) and writes y (+ 8 bytes a row); backward
// reads x, dy (row kernel) and x, dy again (column kernel), writes dx. The column kernel has
// ceil(D/32) blocks: enough for wide rows; narrow D with very many rows would want a row split
// through a workspace.
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/layernorm.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kWarpRowMaxD = 1024;  // above this, a block per row
constexpr int kColumns = 32;            // column kernel: 32 columns x 16 row slices
constexpr int kRowSlices = 16;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of (a, b) over the kWarpsPerRow warps of a row, in warp order, returned to every thread of
// the row. One __syncthreads in block mode (the caller's block handles a single row).
template <int kWarpsPerRow>
__device__ __forceinline__ double2 row_sum(double a, double b) {
  a = warp_sum(a);
  b = warp_sum(b);
  if constexpr (kWarpsPerRow == 1) {
    return make_double2(__shfl_sync(0xffffffffu, a, 0), __shfl_sync(0xffffffffu, b, 0));
  } else {
    static_assert(kWarpsPerRow == kWarps, "block mode: one row per block");
    __shared__ double2 s_part[kWarps];
    if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = make_double2(a, b);
    __syncthreads();
    double2 r = make_double2(0.0, 0.0);
    for (int w = 0; w < kWarps; ++w) {
      r.x += s_part[w].x;
      r.y += s_part[w].y;
    }
    return r;
  }
}

// Row handled by this thread, and the thread's index and count within that row.
template <int kWarpsPerRow>
struct RowSlot {
  int64_t row;
  int t, threads;
  __device__ RowSlot() {
    threads = 32 * kWarpsPerRow;
    row = static_cast<int64_t>(blockIdx.x) * (kWarps / kWarpsPerRow) + threadIdx.x / threads;
    t = threadIdx.x % threads;
  }
};

template <int kWarpsPerRow>
__global__ __launch_bounds__(kThreads) void layernorm_forward_kernel(
    int64_t M, int64_t D, const float* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, float eps, float* __restrict__ y, float* __restrict__ save_mean,
    float* __restrict__ save_invstd) {
  const RowSlot<kWarpsPerRow> slot;
  if (slot.row >= M) return;           // warp mode only (block mode has one valid row per block)
  const float* xr = x + slot.row * D;  // (D)
  float* yr = y + slot.row * D;        // (D)
  const double shift = static_cast<double>(xr[0]);
  double s1 = 0.0, s2 = 0.0;
  constexpr int U = 4;
  for (int64_t j0 = slot.t; j0 < D; j0 += int64_t{U} * slot.threads) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t j = j0 + int64_t{u} * slot.threads;
      v[u] = j < D ? xr[j] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (j0 + int64_t{u} * slot.threads < D) {
        const double d = static_cast<double>(v[u]) - shift;
        s1 += d;
        s2 += d * d;
      }
    }
  }
  const double2 sums = row_sum<kWarpsPerRow>(s1, s2);
  const double Dd = static_cast<double>(D);
  const double dm = sums.x / Dd;
  double var = (sums.y - sums.x * dm) / Dd;
  var = var < 0.0 ? 0.0 : var;  // rounding only; a NaN stays NaN
  const float f_mean = static_cast<float>(shift + dm);
  const float f_invstd = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
  if (slot.t == 0) {
    save_mean[slot.row] = f_mean;
    save_invstd[slot.row] = f_invstd;
  }
  for (int64_t j = slot.t; j < D; j += slot.threads) {
    const float gm = gamma != nullptr ? gamma[j] : 1.0f;
    const float bt = beta != nullptr ? beta[j] : 0.0f;
    yr[j] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[j], f_mean), f_invstd), gm), bt);
  }
}

template <int kWarpsPerRow>
__global__ __launch_bounds__(kThreads) void layernorm_backward_dx_kernel(
    int64_t M, int64_t D, const float* __restrict__ x, const float* __restrict__ dy,
    const float* __restrict__ gamma, const float* __restrict__ save_mean,
    const float* __restrict__ save_invstd, float* __restrict__ dx) {
  const RowSlot<kWarpsPerRow> slot;
  if (slot.row >= M) return;
  const float* xr = x + slot.row * D;    // (D)
  const float* dyr = dy + slot.row * D;  // (D)
  float* dxr = dx + slot.row * D;        // (D)
  const float mean = save_mean[slot.row];
  const float invstd = save_invstd[slot.row];
  auto g_at = [&](int64_t j) {
    return static_cast<double>(dyr[j]) * (gamma != nullptr ? static_cast<double>(gamma[j]) : 1.0);
  };
  auto xhat_at = [&](int64_t j) {
    return static_cast<double>(__fmul_rn(__fsub_rn(xr[j], mean), invstd));
  };
  double sum_g = 0.0, sum_gx = 0.0;
  for (int64_t j = slot.t; j < D; j += slot.threads) {
    const double g = g_at(j);
    sum_g += g;
    sum_gx += g * xhat_at(j);
  }
  const double2 sums = row_sum<kWarpsPerRow>(sum_g, sum_gx);
  const double Dd = static_cast<double>(D);
  const double mean_g = sums.x / Dd;
  const double mean_gx = sums.y / Dd;
  const double inv = static_cast<double>(invstd);
  for (int64_t j = slot.t; j < D; j += slot.threads) {
    const double inner = __dsub_rn(__dsub_rn(g_at(j), mean_g), __dmul_rn(xhat_at(j), mean_gx));
    dxr[j] = static_cast<float>(__dmul_rn(inv, inner));
  }
}

// dgamma_j = sum_i dy_ij * xhat_ij, dbeta_j = sum_i dy_ij. Block (32 columns, 16 row slices):
// thread (tx, ty) sums rows ty, ty + 16, ... of column blockIdx.x * 32 + tx; the 16 partials of a
// column are then added in slice order.
__global__ __launch_bounds__(kColumns* kRowSlices) void layernorm_dgamma_dbeta_kernel(
    int64_t M, int64_t D, const float* __restrict__ x, const float* __restrict__ dy,
    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
    float* __restrict__ dgamma, float* __restrict__ dbeta) {
  __shared__ double2 s_part[kRowSlices][kColumns];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumns + tx;
  double sg = 0.0, sb = 0.0;
  if (j < D) {
    for (int64_t i = ty; i < M; i += kRowSlices) {
      const float xhat = __fmul_rn(__fsub_rn(x[i * D + j], save_mean[i]), save_invstd[i]);
      const double d = static_cast<double>(dy[i * D + j]);
      sg += d * static_cast<double>(xhat);
      sb += d;
    }
  }
  s_part[ty][tx] = make_double2(sg, sb);
  __syncthreads();
  if (ty == 0 && j < D) {
    double2 r = make_double2(0.0, 0.0);
    for (int k = 0; k < kRowSlices; ++k) {
      r.x += s_part[k][tx].x;
      r.y += s_part[k][tx].y;
    }
    if (dgamma != nullptr) dgamma[j] = static_cast<float>(r.x);
    if (dbeta != nullptr) dbeta[j] = static_cast<float>(r.y);
  }
}

void check_rows(const char* who, int64_t M) {
  if (M > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string(who) + ": M = " + std::to_string(M) +
                                " rows exceed the grid limit");
  }
}

}  // namespace

void layernorm_forward_cuda(cudaStream_t stream, int64_t M, int64_t D, const float* x,
                            const float* gamma, const float* beta, float eps, float* y,
                            float* save_mean, float* save_invstd) {
  if (M <= 0 || D <= 0) return;
  check_rows("layernorm_forward_cuda", M);
  if (D <= kWarpRowMaxD) {
    const int64_t blocks = (M + kWarps - 1) / kWarps;
    layernorm_forward_kernel<1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        M, D, x, gamma, beta, eps, y, save_mean, save_invstd);
  } else {
    layernorm_forward_kernel<kWarps><<<static_cast<unsigned>(M), kThreads, 0, stream>>>(
        M, D, x, gamma, beta, eps, y, save_mean, save_invstd);
  }
  PB_CUDA_LAUNCH_CHECK();
}

void layernorm_backward_cuda(cudaStream_t stream, int64_t M, int64_t D, const float* x,
                             const float* dy, const float* gamma, const float* save_mean,
                             const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  if (D <= 0) return;
  check_rows("layernorm_backward_cuda", M);
  if (M > 0) {
    if (D <= kWarpRowMaxD) {
      const int64_t blocks = (M + kWarps - 1) / kWarps;
      layernorm_backward_dx_kernel<1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          M, D, x, dy, gamma, save_mean, save_invstd, dx);
    } else {
      layernorm_backward_dx_kernel<kWarps><<<static_cast<unsigned>(M), kThreads, 0, stream>>>(
          M, D, x, dy, gamma, save_mean, save_invstd, dx);
    }
    PB_CUDA_LAUNCH_CHECK();
  }
  if (dgamma != nullptr || dbeta != nullptr) {  // M == 0 writes zeros, as the CPU does
    const int64_t blocks = (D + kColumns - 1) / kColumns;
    layernorm_dgamma_dbeta_kernel<<<static_cast<unsigned>(blocks), dim3(kColumns, kRowSlices), 0,
                                    stream>>>(M, D, x, dy, save_mean, save_invstd, dgamma, dbeta);
    PB_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace pb::kernels
