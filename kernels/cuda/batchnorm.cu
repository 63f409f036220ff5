// CUDA batch norm and ghost batch norm (float), the same functions as kernels/cpu/batchnorm.cpp.
//   x, y, dy, dx: (N,C,L)   save_mean, save_invstd: (G,C)   gamma, beta, running_*: (C)
//
// Design (train forward, train backward, eval backward)
//   One block of 512 threads per channel c; the block walks the channel's G groups and, after the
//   last one, performs the running-statistics EMA (or writes dgamma/dbeta) itself, so the whole
//   op is one launch with no workspace, no atomics and no host sync. The block is split into S
//   sub-blocks (S a power of two in [1,16], from the shape only: enough groups in flight that
//   each thread has ~8 values per pass even when V*L is small), and sub-block s handles group
//   g = r*S + s in round r. Per round:
//     pass 1  each thread accumulates its values in double; per-warp shuffle trees; one
//             __syncthreads; each thread sums its sub-block's warp partials in warp order.
//     pass 2  the elementwise output (y, or dx) re-reading the group's values.
//   Thread 0 then adds the round's group statistics (or dgamma/dbeta terms) to the channel's
//   accumulators in group order, as the CPU does. Every partition and summation order is a
//   function of the shape alone: results are deterministic and GPU independent. The warp
//   partials are double-buffered by round parity, so one barrier per round suffices.
//   Values are read as float4 when L % 4 == 0 and the big tensors are 16-byte aligned; the
//   (n, l) of a flat in-group index comes from a 32-bit multiply-shift division.
//
// Numerics
//   Statistics: shifted sums in double. With K = the group's first value, s1 = sum(x - K) and
//   s2 = sum((x - K)^2); mean = K + s1/m, var = (s2 - s1^2/m)/m (biased; clamped at 0). Shifting
//   by a sample of the data removes the cancellation of E[x^2] - E[x]^2 when |mean| >> std (the
//   CPU's two-pass result is matched to double rounding), in one read of x.
//   y = ((x - mean) * invstd) * gamma + beta in float with the rounded (saved) statistics, each
//   operation rounded (no fma contraction), exactly the CPU's expression: given the same saved
//   statistics, y is bitwise the CPU's. The statistics themselves agree with the CPU's to double
//   rounding, so mean/invstd rarely differ by 1 ulp of float.
//   Backward: xhat = (x - mean) * invstd in float as on the CPU; sums of dy and dy*xhat in double;
//   dx = (float)(k * ((dy - mean_dy) - xhat * mean_dy_xhat)) in double with k = gamma * invstd,
//   each double operation rounded as on the CPU.
//   The EMA runs in double from the double group statistics, in the CPU's order and expression.
//   Eval: invstd = 1.0f / sqrtf(rv + eps) (IEEE, as the CPU), then the CPU's float expressions:
//   eval y and dx are bitwise the CPU's; dgamma/dbeta are double sums (rounding-order only).
//
// Bytes moved (fewest possible in brackets):
//   train fwd: 2 reads of x + 1 write of y       [1 read + 1 write; statistics must precede y]
//   train bwd: 2 reads of x, dy + 1 write of dx  [1 read of each + 1 write]
//   eval fwd: 1 read + 1 write; eval bwd: 1 read of x, dy + 1 write of dx.
//   The ReLU variants also read y (the forward output) wherever they read dy.
//
// Limits: V*L (train) and N*L (eval) must be below 2^31 per channel (std::invalid_argument).
// Parallelism is C blocks for the block-per-channel kernels; (N,C) inputs (L = 1) read with
// stride C (uncoalesced but correct; such tensors are small).
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/batchnorm.h"
#include "kernels/cuda/check.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 512;  // block-per-channel kernels
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSubBlocks = 16;  // sub-blocks of at least one warp
constexpr int kEvalThreads = 256;  // eval forward (elementwise)
constexpr int kMaxGridY = 65535;

// Quotient of a 32-bit dividend in [0, 2^31) by a fixed divisor: multiply-high and shift with
// m = ceil(2^(31+l) / d), l = ceil(log2 d) (Granlund-Montgomery; exact for dividends < 2^31).
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 0, shift = 0;
  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    if (d == 1) return;
    uint32_t l = 0;
    while ((uint64_t{1} << l) < d) ++l;
    const uint32_t p = 31 + l;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << p) + d - 1) / d);
    shift = p - 32;
  }
  __device__ __forceinline__ uint32_t div(uint32_t x) const {
    return divisor == 1 ? x : __umulhi(x, multiplier) >> shift;
  }
};

// One "unit" is a float, or a float4 when kVec.
template <bool kVec>
struct Unit {
  static constexpr int kWidth = kVec ? 4 : 1;
  static constexpr int kUnroll = kVec ? 4 : 8;  // units in flight per thread (16 or 32 bytes)
  // Train backward keeps x and dy (and y) of each unit live across the unrolled step; fewer
  // units keep it within the 64 registers of two 512-thread blocks per SM, without spills.
  static constexpr int kUnrollBackward = kVec ? 2 : 6;
};

template <bool kVec>
__device__ __forceinline__ void load_unit(const float* __restrict__ p, int64_t unit,
                                          float (&e)[Unit<kVec>::kWidth]) {
  if constexpr (kVec) {
    const float4 v = reinterpret_cast<const float4*>(p)[unit];
    e[0] = v.x;
    e[1] = v.y;
    e[2] = v.z;
    e[3] = v.w;
  } else {
    e[0] = p[unit];
  }
}

template <bool kVec>
__device__ __forceinline__ void store_unit(float* __restrict__ p, int64_t unit,
                                           const float (&e)[Unit<kVec>::kWidth]) {
  if constexpr (kVec) {
    reinterpret_cast<float4*>(p)[unit] = make_float4(e[0], e[1], e[2], e[3]);
  } else {
    p[unit] = e[0];
  }
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// y = ((x - mean) * invstd) * gamma + beta, every operation rounded as on the CPU.
__device__ __forceinline__ float normalize(float x, float mean, float invstd, float gm, float bt) {
  return __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(x, mean), invstd), gm), bt);
}

__device__ __forceinline__ float relu(float v) {
  return v < 0.0f ? 0.0f : v;  // NaN stays NaN, as relu_forward
}

// Shape of the per-channel work, prepared on the host.
struct ChannelParams {
  int64_t C;          // channels
  int64_t Lu;         // units per (n, c) row: L, or L / 4 when vectorised
  int V, G;           // examples per group, groups
  int S;              // sub-blocks: groups in flight per block
  uint32_t m_units;   // units per group, V * Lu (< 2^31)
  FastDivmod div_lu;  // divides by Lu
  double m;           // values per group, V * L
  double unbias;      // m / (m - 1), or 1 when m == 1
};

// Unit offset of in-group unit j of group g, channel c: x[(g*V + n, c, lu)].
__device__ __forceinline__ int64_t unit_offset(const ChannelParams& p, int g, int64_t c,
                                               uint32_t j) {
  const uint32_t n = p.div_lu.div(j);
  const int64_t lu = static_cast<int64_t>(j) - static_cast<int64_t>(n) * p.Lu;
  return ((static_cast<int64_t>(g) * p.V + n) * p.C + c) * p.Lu + lu;
}

// Per-thread view of the sub-block layout.
struct SubBlock {
  int id;       // sub-block index in [0, S)
  int t;        // thread index within the sub-block
  int threads;  // threads per sub-block
  int warps;    // warps per sub-block
  __device__ explicit SubBlock(int S) {
    threads = kThreads / S;
    warps = threads / 32;
    id = threadIdx.x / threads;
    t = threadIdx.x - id * threads;
  }
};

// Sum of this sub-block's warp partials, in warp order (the same value in every thread, and the
// same as group_total() for that sub-block in thread 0).
__device__ __forceinline__ double2 group_total(const double2* s_part, int sub, int warps) {
  double2 r = make_double2(0.0, 0.0);
  for (int w = 0; w < warps; ++w) {
    r.x += s_part[sub * warps + w].x;
    r.y += s_part[sub * warps + w].y;
  }
  return r;
}

// Group statistics from shifted sums (see the numerics note).
__device__ __forceinline__ void group_stats(double2 sums, double shift, double m, double& mean,
                                            double& var) {
  const double d = sums.x / m;
  mean = shift + d;
  var = (sums.y - sums.x * d) / m;
  var = var < 0.0 ? 0.0 : var;  // rounding only; a NaN stays NaN
}

// Warp-level reduction of (a, b) then lane 0 stores the warp's partial.
__device__ __forceinline__ void store_warp_partial(double a, double b, double2* s_part) {
  a = warp_sum(a);
  b = warp_sum(b);
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = make_double2(a, b);
}

// ---- train forward ------------------------------------------------------------------------------

template <bool kVec, bool kRelu>
__global__ __launch_bounds__(kThreads, 2) void bn_forward_train_kernel(
    ChannelParams p, const float* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, float eps, float momentum, float* __restrict__ y,
    float* __restrict__ save_mean, float* __restrict__ save_invstd,
    float* __restrict__ running_mean, float* __restrict__ running_var) {
  constexpr int W = Unit<kVec>::kWidth;
  constexpr int U = Unit<kVec>::kUnroll;
  __shared__ double2 s_part[2][kWarps];         // warp partials, by round parity
  __shared__ double s_shift[2][kMaxSubBlocks];  // each group's shift K, by round parity

  const int64_t c = blockIdx.x;
  const SubBlock sb(p.S);
  const float gm = gamma != nullptr ? gamma[c] : 1.0f;
  const float bt = beta != nullptr ? beta[c] : 0.0f;
  double sum_means = 0.0, sum_vars = 0.0;  // thread 0: over groups, in group order

  const int rounds = (p.G + p.S - 1) / p.S;
  for (int r = 0; r < rounds; ++r) {
    const int buf = r & 1;
    const int g = r * p.S + sb.id;
    const bool active = g < p.G;
    double shift = 0.0;
    // Pass 1: shifted sums of the group's values.
    double s1 = 0.0, s2 = 0.0;
    if (active) {
      shift = static_cast<double>(x[unit_offset(p, g, c, 0) * W]);
      if (sb.t == 0) s_shift[buf][sb.id] = shift;
      for (uint32_t j0 = sb.t; j0 < p.m_units; j0 += U * sb.threads) {
        float e[U][W] = {};
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const uint32_t j = j0 + u * sb.threads;
          if (j < p.m_units) load_unit<kVec>(x, unit_offset(p, g, c, j), e[u]);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (j0 + u * sb.threads < p.m_units) {
#pragma unroll
            for (int k = 0; k < W; ++k) {
              const double d = static_cast<double>(e[u][k]) - shift;
              s1 += d;
              s2 += d * d;
            }
          }
        }
      }
    }
    store_warp_partial(s1, s2, s_part[buf]);
    __syncthreads();

    if (threadIdx.x == 0) {  // the EMA's accumulators, in group order
      for (int s = 0; s < p.S && r * p.S + s < p.G; ++s) {
        double mean, var;
        group_stats(group_total(s_part[buf], s, sb.warps), s_shift[buf][s], p.m, mean, var);
        sum_means += mean;
        sum_vars += var * p.unbias;
      }
    }
    if (!active) continue;  // no barrier follows in this round

    double mean, var;
    group_stats(group_total(s_part[buf], sb.id, sb.warps), shift, p.m, mean, var);
    const float f_mean = static_cast<float>(mean);
    const float f_invstd = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
    if (sb.t == 0) {
      save_mean[static_cast<int64_t>(g) * p.C + c] = f_mean;
      save_invstd[static_cast<int64_t>(g) * p.C + c] = f_invstd;
    }
    // Pass 2: y with the rounded statistics.
    for (uint32_t j0 = sb.t; j0 < p.m_units; j0 += U * sb.threads) {
      float e[U][W] = {};
      int64_t off[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint32_t j = j0 + u * sb.threads;
        off[u] = j < p.m_units ? unit_offset(p, g, c, j) : -1;
        if (off[u] >= 0) load_unit<kVec>(x, off[u], e[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (off[u] >= 0) {
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const float v = normalize(e[u][k], f_mean, f_invstd, gm, bt);
            e[u][k] = kRelu ? relu(v) : v;
          }
          store_unit<kVec>(y, off[u], e[u]);
        }
      }
    }
  }

  if (threadIdx.x == 0) {
    const double mom = static_cast<double>(momentum);
    const double G = static_cast<double>(p.G);
    if (running_mean != nullptr) {
      const double batch_mean = sum_means / G;
      running_mean[c] = static_cast<float>(__dadd_rn(
          __dmul_rn(1.0 - mom, static_cast<double>(running_mean[c])), __dmul_rn(mom, batch_mean)));
    }
    if (running_var != nullptr) {
      const double batch_var = sum_vars / G;
      running_var[c] = static_cast<float>(__dadd_rn(
          __dmul_rn(1.0 - mom, static_cast<double>(running_var[c])), __dmul_rn(mom, batch_var)));
    }
  }
}

// ---- train backward -----------------------------------------------------------------------------

// relu_y: the forward output of the fused BN+ReLU (dy is masked by relu_y > 0), or unused.
template <bool kVec, bool kRelu>
__global__ __launch_bounds__(kThreads, 2) void bn_backward_train_kernel(
    ChannelParams p, const float* __restrict__ x, const float* __restrict__ relu_y,
    const float* __restrict__ dy, const float* __restrict__ gamma,
    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
    float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta) {
  constexpr int W = Unit<kVec>::kWidth;
  constexpr int U = Unit<kVec>::kUnrollBackward;
  __shared__ double2 s_part[2][kWarps];

  const int64_t c = blockIdx.x;
  const SubBlock sb(p.S);
  const double gm = gamma != nullptr ? static_cast<double>(gamma[c]) : 1.0;
  double dgamma_acc = 0.0, dbeta_acc = 0.0;  // thread 0: over groups, in group order

  // Loads one unit of x and of dy (masked by relu_y) at unit offset off.
  auto load_x_dy = [&](int64_t off, float(&xe)[W], float(&de)[W]) {
    load_unit<kVec>(x, off, xe);
    load_unit<kVec>(dy, off, de);
    if constexpr (kRelu) {
      float ye[W];
      load_unit<kVec>(relu_y, off, ye);
#pragma unroll
      for (int k = 0; k < W; ++k) de[k] = ye[k] > 0.0f ? de[k] : 0.0f;
    }
  };

  const int rounds = (p.G + p.S - 1) / p.S;
  for (int r = 0; r < rounds; ++r) {
    const int buf = r & 1;
    const int g = r * p.S + sb.id;
    const bool active = g < p.G;
    float f_mean = 0.0f, f_invstd = 0.0f;
    double s_dy = 0.0, s_dyx = 0.0;
    if (active) {
      f_mean = save_mean[static_cast<int64_t>(g) * p.C + c];
      f_invstd = save_invstd[static_cast<int64_t>(g) * p.C + c];
      for (uint32_t j0 = sb.t; j0 < p.m_units; j0 += U * sb.threads) {
        float xe[U][W] = {}, de[U][W] = {};
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const uint32_t j = j0 + u * sb.threads;
          if (j < p.m_units) load_x_dy(unit_offset(p, g, c, j), xe[u], de[u]);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (j0 + u * sb.threads < p.m_units) {
#pragma unroll
            for (int k = 0; k < W; ++k) {
              const float xhat = __fmul_rn(__fsub_rn(xe[u][k], f_mean), f_invstd);
              const double d = static_cast<double>(de[u][k]);
              s_dy += d;
              s_dyx += d * static_cast<double>(xhat);
            }
          }
        }
      }
    }
    store_warp_partial(s_dy, s_dyx, s_part[buf]);
    __syncthreads();

    if (threadIdx.x == 0) {
      for (int s = 0; s < p.S && r * p.S + s < p.G; ++s) {
        const double2 t = group_total(s_part[buf], s, sb.warps);
        dgamma_acc += t.y;
        dbeta_acc += t.x;
      }
    }
    if (!active) continue;

    const double2 t = group_total(s_part[buf], sb.id, sb.warps);
    const double k_scale = gm * static_cast<double>(f_invstd);
    const double mean_dy = t.x / p.m;
    const double mean_dyx = t.y / p.m;
    for (uint32_t j0 = sb.t; j0 < p.m_units; j0 += U * sb.threads) {
      float xe[U][W] = {}, de[U][W] = {};
      int64_t off[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint32_t j = j0 + u * sb.threads;
        off[u] = j < p.m_units ? unit_offset(p, g, c, j) : -1;
        if (off[u] >= 0) load_x_dy(off[u], xe[u], de[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (off[u] >= 0) {
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const double xhat =
                static_cast<double>(__fmul_rn(__fsub_rn(xe[u][k], f_mean), f_invstd));
            const double inner = __dsub_rn(__dsub_rn(static_cast<double>(de[u][k]), mean_dy),
                                           __dmul_rn(xhat, mean_dyx));
            xe[u][k] = static_cast<float>(__dmul_rn(k_scale, inner));
          }
          store_unit<kVec>(dx, off[u], xe[u]);
        }
      }
    }
  }

  if (threadIdx.x == 0) {
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(dgamma_acc);
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(dbeta_acc);
  }
}

// ---- eval ---------------------------------------------------------------------------------------

// y = ((x - rm) * invstd) * gamma + beta. Grid (tiles of the channel's N*Lu units, channels).
template <bool kVec, bool kRelu>
__global__ __launch_bounds__(kEvalThreads) void bn_forward_eval_kernel(
    ChannelParams p, const float* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ running_mean,
    const float* __restrict__ running_var, float eps, float* __restrict__ y) {
  constexpr int W = Unit<kVec>::kWidth;
  constexpr int U = Unit<kVec>::kUnroll;
  constexpr uint32_t kTile = U * kEvalThreads;
  for (int64_t c = blockIdx.y; c < p.C; c += gridDim.y) {
    const float invstd = 1.0f / sqrtf(running_var[c] + eps);
    const float mean = running_mean[c];
    const float gm = gamma != nullptr ? gamma[c] : 1.0f;
    const float bt = beta != nullptr ? beta[c] : 0.0f;
    for (uint32_t base = blockIdx.x * kTile; base < p.m_units; base += gridDim.x * kTile) {
      float e[U][W] = {};
      int64_t off[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint32_t j = base + u * kEvalThreads + threadIdx.x;
        off[u] = j < p.m_units ? unit_offset(p, 0, c, j) : -1;
        if (off[u] >= 0) load_unit<kVec>(x, off[u], e[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (off[u] >= 0) {
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const float v = normalize(e[u][k], mean, invstd, gm, bt);
            e[u][k] = kRelu ? relu(v) : v;
          }
          store_unit<kVec>(y, off[u], e[u]);
        }
      }
    }
  }
}

// dx = dy * (gamma * invstd); dgamma = sum dy * xhat, dbeta = sum dy over (N, L). One block per
// channel, one pass (p describes one group of all N examples).
template <bool kVec, bool kRelu>
__global__ __launch_bounds__(kThreads, 2) void bn_backward_eval_kernel(
    ChannelParams p, const float* __restrict__ x, const float* __restrict__ relu_y,
    const float* __restrict__ dy, const float* __restrict__ gamma,
    const float* __restrict__ running_mean, const float* __restrict__ running_var, float eps,
    float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta) {
  constexpr int W = Unit<kVec>::kWidth;
  constexpr int U = Unit<kVec>::kUnroll;
  __shared__ double2 s_part[kWarps];
  const int64_t c = blockIdx.x;
  const float invstd = 1.0f / sqrtf(running_var[c] + eps);
  const float mean = running_mean[c];
  const float k_scale = (gamma != nullptr ? gamma[c] : 1.0f) * invstd;
  double s_dy = 0.0, s_dyx = 0.0;
  for (uint32_t j0 = threadIdx.x; j0 < p.m_units; j0 += U * kThreads) {
    float xe[U][W] = {}, de[U][W] = {};
    int64_t off[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t j = j0 + u * kThreads;
      off[u] = j < p.m_units ? unit_offset(p, 0, c, j) : -1;
      if (off[u] >= 0) {
        load_unit<kVec>(x, off[u], xe[u]);
        load_unit<kVec>(dy, off[u], de[u]);
        if constexpr (kRelu) {
          float ye[W];
          load_unit<kVec>(relu_y, off[u], ye);
#pragma unroll
          for (int k = 0; k < W; ++k) de[u][k] = ye[k] > 0.0f ? de[u][k] : 0.0f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (off[u] >= 0) {
#pragma unroll
        for (int k = 0; k < W; ++k) {
          const float xhat = __fmul_rn(__fsub_rn(xe[u][k], mean), invstd);
          const double d = static_cast<double>(de[u][k]);
          s_dy += d;
          s_dyx += d * static_cast<double>(xhat);
          xe[u][k] = __fmul_rn(de[u][k], k_scale);
        }
        store_unit<kVec>(dx, off[u], xe[u]);
      }
    }
  }
  store_warp_partial(s_dy, s_dyx, s_part);
  __syncthreads();
  if (threadIdx.x == 0) {
    const double2 t = group_total(s_part, 0, kWarps);
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(t.y);
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(t.x);
  }
}

// ---- host side ----------------------------------------------------------------------------------

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Vectorise when rows are whole float4s and every big tensor is 16-byte aligned (nullptr counts
// as aligned: unused).
bool use_vec(int64_t L, std::initializer_list<const void*> ptrs) {
  if (L % 4 != 0) return false;
  for (const void* q : ptrs)
    if (!aligned16(q)) return false;
  return true;
}

// Per-channel parameters for groups of V examples (G groups); eval passes V = N, G = 1.
ChannelParams make_params(const char* who, const BatchNormShape& s, int64_t V, int64_t G,
                          bool vec) {
  const int64_t Lu = vec ? s.L / 4 : s.L;
  const int64_t m_units = V * Lu;
  if (m_units >= (int64_t{1} << 31) || G > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(V) + " x " +
                                std::to_string(s.L) +
                                " values per channel and group exceed the 2^31 limit");
  }
  ChannelParams p{};
  p.C = s.C;
  p.Lu = Lu;
  p.V = static_cast<int>(V);
  p.G = static_cast<int>(G);
  p.m_units = static_cast<uint32_t>(m_units);
  p.div_lu = FastDivmod(static_cast<uint32_t>(Lu));
  p.m = static_cast<double>(V * s.L);
  p.unbias = V * s.L > 1 ? p.m / (p.m - 1.0) : 1.0;
  // Sub-blocks: the fewest (a power of two) that give each thread ~8 units per pass, at most one
  // per group and at most kMaxSubBlocks.
  int S = 1;
  while (S < kMaxSubBlocks && 2 * S <= G && m_units * S < int64_t{kThreads} * 8) S *= 2;
  p.S = S;
  return p;
}

void check_channels(const char* who, const BatchNormShape& s) {
  if (s.C > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string(who) + ": C = " + std::to_string(s.C) +
                                " exceeds the grid limit");
  }
}

template <bool kRelu>
void forward_train(cudaStream_t stream, const BatchNormShape& s, const float* x, const float* gamma,
                   const float* beta, float eps, float momentum, float* y, float* save_mean,
                   float* save_invstd, float* running_mean, float* running_var) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) return;
  const char* who = kRelu ? "batchnorm_relu_forward_train_cuda" : "batchnorm_forward_train_cuda";
  check_channels(who, s);
  const bool vec = use_vec(s.L, {x, y});
  const ChannelParams p = make_params(who, s, s.group_size(), s.groups(), vec);
  const unsigned grid = static_cast<unsigned>(s.C);
  if (vec) {
    bn_forward_train_kernel<true, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, gamma, beta, eps, momentum, y, save_mean, save_invstd, running_mean, running_var);
  } else {
    bn_forward_train_kernel<false, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, gamma, beta, eps, momentum, y, save_mean, save_invstd, running_mean, running_var);
  }
  PB_CUDA_LAUNCH_CHECK();
}

template <bool kRelu>
void forward_eval(cudaStream_t stream, const BatchNormShape& s, const float* x, const float* gamma,
                  const float* beta, const float* running_mean, const float* running_var, float eps,
                  float* y) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) return;
  const char* who = kRelu ? "batchnorm_relu_forward_eval_cuda" : "batchnorm_forward_eval_cuda";
  const bool vec = use_vec(s.L, {x, y});
  const ChannelParams p = make_params(who, s, s.N, 1, vec);
  // One tile of Unit<>::kUnroll * kEvalThreads units per block and step (the kernel's kTile).
  const int64_t tile = int64_t{kEvalThreads} * (vec ? Unit<true>::kUnroll : Unit<false>::kUnroll);
  const int64_t gx = (p.m_units + tile - 1) / tile;
  const dim3 grid(static_cast<unsigned>(gx),
                  static_cast<unsigned>(std::min<int64_t>(s.C, kMaxGridY)));
  if (vec) {
    bn_forward_eval_kernel<true, kRelu>
        <<<grid, kEvalThreads, 0, stream>>>(p, x, gamma, beta, running_mean, running_var, eps, y);
  } else {
    bn_forward_eval_kernel<false, kRelu>
        <<<grid, kEvalThreads, 0, stream>>>(p, x, gamma, beta, running_mean, running_var, eps, y);
  }
  PB_CUDA_LAUNCH_CHECK();
}

template <bool kRelu>
void backward_train(cudaStream_t stream, const BatchNormShape& s, const float* x,
                    const float* relu_y, const float* dy, const float* gamma,
                    const float* save_mean, const float* save_invstd, float* dx, float* dgamma,
                    float* dbeta) {
  if (s.C <= 0) return;
  if (s.N <= 0 || s.L <= 0) {  // no values: dgamma = dbeta = 0, as on the CPU
    if (dgamma) PB_CUDA_CHECK(cudaMemsetAsync(dgamma, 0, s.C * sizeof(float), stream));
    if (dbeta) PB_CUDA_CHECK(cudaMemsetAsync(dbeta, 0, s.C * sizeof(float), stream));
    return;
  }
  const char* who = kRelu ? "batchnorm_relu_backward_train_cuda" : "batchnorm_backward_train_cuda";
  check_channels(who, s);
  const bool vec = use_vec(s.L, {x, relu_y, dy, dx});
  const ChannelParams p = make_params(who, s, s.group_size(), s.groups(), vec);
  const unsigned grid = static_cast<unsigned>(s.C);
  if (vec) {
    bn_backward_train_kernel<true, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, relu_y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  } else {
    bn_backward_train_kernel<false, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, relu_y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  }
  PB_CUDA_LAUNCH_CHECK();
}

template <bool kRelu>
void backward_eval(cudaStream_t stream, const BatchNormShape& s, const float* x,
                   const float* relu_y, const float* dy, const float* gamma,
                   const float* running_mean, const float* running_var, float eps, float* dx,
                   float* dgamma, float* dbeta) {
  if (s.C <= 0) return;
  if (s.N <= 0 || s.L <= 0) {
    if (dgamma) PB_CUDA_CHECK(cudaMemsetAsync(dgamma, 0, s.C * sizeof(float), stream));
    if (dbeta) PB_CUDA_CHECK(cudaMemsetAsync(dbeta, 0, s.C * sizeof(float), stream));
    return;
  }
  const char* who = kRelu ? "batchnorm_relu_backward_eval_cuda" : "batchnorm_backward_eval_cuda";
  check_channels(who, s);
  const bool vec = use_vec(s.L, {x, relu_y, dy, dx});
  const ChannelParams p = make_params(who, s, s.N, 1, vec);
  const unsigned grid = static_cast<unsigned>(s.C);
  if (vec) {
    bn_backward_eval_kernel<true, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, relu_y, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
  } else {
    bn_backward_eval_kernel<false, kRelu><<<grid, kThreads, 0, stream>>>(
        p, x, relu_y, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
  }
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void batchnorm_forward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                  const float* gamma, const float* beta, float eps, float momentum,
                                  float* y, float* save_mean, float* save_invstd,
                                  float* running_mean, float* running_var) {
  forward_train<false>(stream, s, x, gamma, beta, eps, momentum, y, save_mean, save_invstd,
                       running_mean, running_var);
}

void batchnorm_forward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, float eps, float* y) {
  forward_eval<false>(stream, s, x, gamma, beta, running_mean, running_var, eps, y);
}

void batchnorm_backward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                   const float* dy, const float* gamma, const float* save_mean,
                                   const float* save_invstd, float* dx, float* dgamma,
                                   float* dbeta) {
  backward_train<false>(stream, s, x, nullptr, dy, gamma, save_mean, save_invstd, dx, dgamma,
                        dbeta);
}

void batchnorm_backward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                  const float* dy, const float* gamma, const float* running_mean,
                                  const float* running_var, float eps, float* dx, float* dgamma,
                                  float* dbeta) {
  backward_eval<false>(stream, s, x, nullptr, dy, gamma, running_mean, running_var, eps, dx, dgamma,
                       dbeta);
}

void batchnorm_relu_forward_train_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                       const float* gamma, const float* beta, float eps,
                                       float momentum, float* y, float* save_mean,
                                       float* save_invstd, float* running_mean,
                                       float* running_var) {
  forward_train<true>(stream, s, x, gamma, beta, eps, momentum, y, save_mean, save_invstd,
                      running_mean, running_var);
}

void batchnorm_relu_forward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                      const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var,
                                      float eps, float* y) {
  forward_eval<true>(stream, s, x, gamma, beta, running_mean, running_var, eps, y);
}

void batchnorm_relu_backward_train_cuda(cudaStream_t stream, const BatchNormShape& s,
                                        const float* x, const float* y, const float* dy,
                                        const float* gamma, const float* save_mean,
                                        const float* save_invstd, float* dx, float* dgamma,
                                        float* dbeta) {
  backward_train<true>(stream, s, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

void batchnorm_relu_backward_eval_cuda(cudaStream_t stream, const BatchNormShape& s, const float* x,
                                       const float* y, const float* dy, const float* gamma,
                                       const float* running_mean, const float* running_var,
                                       float eps, float* dx, float* dgamma, float* dbeta) {
  backward_eval<true>(stream, s, x, y, dy, gamma, running_mean, running_var, eps, dx, dgamma,
                      dbeta);
}

}  // namespace pb::kernels
