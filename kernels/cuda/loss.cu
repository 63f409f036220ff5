// CUDA losses (float): softmax cross-entropy with label smoothing and weights, and MSE; the same
// functions as kernels/cpu/loss.cpp, with the loss and its upstream gradient in device memory.
//
// Cross-entropy forward (logits, probs: (N,K); labels, weights: (N))
//   Row kernel: a warp per row when K <= 2048 (8 rows per 256-thread block), a block per row
//   above. Per row, three sweeps (the row is in L1/L2 after the first; DRAM sees one read of the
//   logits and one write of probs):
//     1. max (float, fmaxf: a NaN is skipped as std::fmax does on the CPU) and sum_k z_k (double);
//     2. S = sum_k expf(z_k - max) in double;  lse = max + log(S) in double;
//     3. probs_k = expf(z_k - max) * (float)(1 / S).
//   l_i = -(1 - s)(z_label - lse) - (s / K)(sum_k z_k - K lse), in double. Rows with w_i == 0
//   contribute nothing (their label is not read); a row with w_i != 0 and a label outside [0,K)
//   is counted as invalid (its label never indexes).
//   Each block accumulates sum w_i l_i, sum w_i (double) and the invalid count of its rows in a
//   fixed order into workspace partial b; the grid is min(rows / rows-per-block, 1024) blocks, a
//   function of N only. A one-block finalize kernel combines the partials in a fixed tree and
//   writes *loss = NaN if any label was invalid, else sum w l / sum w (0 when sum w == 0).
//   Numerics vs the CPU (double throughout): probs within ~1e-6 relative (expf: 2 ulp; z - max
//   rounded in float), the loss within ~1e-7 relative (S from float expf terms).
// Cross-entropy backward: warp per row: dlogits_ik = (float)(coef_i * (probs_ik - q_ik)) with
//   coef_i = *dloss * w_i / sum_i w_i in double, the CPU's expression; sum_i w_i by a one-block
//   kernel (fixed order) into the workspace when weights are given, else N.
// MSE: forward = the two-stage double sum of (pred - target)^2 (as kernels/cuda/reduce.cu) / n;
//   backward elementwise in double, the CPU's expression.
// Bytes: CE forward reads logits (+ labels, weights) once and writes probs; backward reads
//   probs once and writes dlogits; MSE forward reads both inputs once.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/loss.h"
#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFinalThreads = 1024;
constexpr int64_t kWarpRowMaxK = 2048;  // above this, a block per row
static_assert(kReduceCudaMaxBlocks <= kFinalThreads, "finalize reads one partial per thread");

// Workspace layout, shared with kernels/cuda/reduce.cu (see there).
double2* partials_of(void* workspace) {
  return static_cast<double2*>(workspace);
}
int32_t* flags_of(void* workspace) {
  return reinterpret_cast<int32_t*>(static_cast<char*>(workspace) +
                                    kReduceCudaMaxBlocks * sizeof(double2));
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Reductions over the threads of one row, the result in every thread of the row. Block mode
// (kWarpsPerRow == kWarps) uses shared memory and ends with a barrier so that the next call may
// reuse it.
template <int kWarpsPerRow>
__device__ float row_max(float v) {
  v = warp_max(v);  // xor tree: every lane holds the warp max
  if constexpr (kWarpsPerRow == 1) {
    return v;
  } else {
    __shared__ float s_max[kWarps];
    if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = s_max[0];
    for (int w = 1; w < kWarps; ++w) r = fmaxf(r, s_max[w]);
    __syncthreads();
    return r;
  }
}

template <int kWarpsPerRow>
__device__ double row_sum(double v) {
  v = warp_sum(v);
  if constexpr (kWarpsPerRow == 1) {
    return __shfl_sync(0xffffffffu, v, 0);
  } else {
    __shared__ double s_sum[kWarps];
    if ((threadIdx.x & 31) == 0) s_sum[threadIdx.x >> 5] = v;
    __syncthreads();
    double r = 0.0;
    for (int w = 0; w < kWarps; ++w) r += s_sum[w];
    __syncthreads();
    return r;
  }
}

// Rows handled by a block per step and the row-local thread layout.
template <int kWarpsPerRow>
struct RowLayout {
  static constexpr int kRowsPerBlock = kWarps / kWarpsPerRow;
  static constexpr int kRowThreads = 32 * kWarpsPerRow;
};

template <int kWarpsPerRow>
__global__ __launch_bounds__(kThreads) void ce_forward_kernel(
    int64_t N, int64_t K, const float* __restrict__ logits, const int32_t* __restrict__ labels,
    const float* __restrict__ weights, double smoothing, float* __restrict__ probs,
    double2* __restrict__ partials, int32_t* __restrict__ flags) {
  using Layout = RowLayout<kWarpsPerRow>;
  const int slot = threadIdx.x / Layout::kRowThreads;  // row slot within the block
  const int t = threadIdx.x % Layout::kRowThreads;     // thread within the row
  const double Kd = static_cast<double>(K);
  double wl_acc = 0.0, w_acc = 0.0;  // thread t == 0 of each slot: its rows, in order
  int invalid = 0;

  // Uniform trip count for every thread of the block (block mode has barriers inside).
  const int64_t step = static_cast<int64_t>(gridDim.x) * Layout::kRowsPerBlock;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * Layout::kRowsPerBlock; base < N;
       base += step) {
    const int64_t i = base + slot;
    if (kWarpsPerRow == 1 && i >= N) break;  // warp mode: whole warps leave
    const float* z = logits + i * K;         // (K)
    float* pr = probs + i * K;               // (K)

    float mx = -INFINITY;
    double sum_z = 0.0;
    for (int64_t k = t; k < K; k += Layout::kRowThreads) {
      const float v = z[k];
      mx = fmaxf(mx, v);
      sum_z += static_cast<double>(v);
    }
    mx = row_max<kWarpsPerRow>(mx);
    sum_z = row_sum<kWarpsPerRow>(sum_z);

    double sum_exp = 0.0;
    for (int64_t k = t; k < K; k += Layout::kRowThreads)
      sum_exp += static_cast<double>(expf(z[k] - mx));
    sum_exp = row_sum<kWarpsPerRow>(sum_exp);

    const double lse = static_cast<double>(mx) + log(sum_exp);
    const float inv_sum = static_cast<float>(1.0 / sum_exp);
    for (int64_t k = t; k < K; k += Layout::kRowThreads) pr[k] = expf(z[k] - mx) * inv_sum;

    if (t == 0) {
      const double w = weights != nullptr ? static_cast<double>(weights[i]) : 1.0;
      if (w != 0.0) {
        const int32_t label = labels[i];
        if (label < 0 || label >= K) {
          ++invalid;
        } else {
          const double logp_label = static_cast<double>(z[label]) - lse;
          const double sum_logp = sum_z - Kd * lse;
          const double l = -(1.0 - smoothing) * logp_label - (smoothing / Kd) * sum_logp;
          wl_acc += w * l;
          w_acc += w;
        }
      }
    }
  }

  // Block partial: the row slots' accumulators in slot order.
  __shared__ double2 s_acc[Layout::kRowsPerBlock];
  __shared__ int s_invalid[Layout::kRowsPerBlock];
  if (t == 0) {
    s_acc[slot] = make_double2(wl_acc, w_acc);
    s_invalid[slot] = invalid;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double2 r = make_double2(0.0, 0.0);
    int bad = 0;
    for (int s = 0; s < Layout::kRowsPerBlock; ++s) {
      r.x += s_acc[s].x;
      r.y += s_acc[s].y;
      bad += s_invalid[s];
    }
    partials[blockIdx.x] = r;
    flags[blockIdx.x] = bad;
  }
}

// Modes of the one-block finalize kernel.
enum class Finish { kCrossEntropy, kMean };

// *out from `count` partials: cross-entropy (x = sum w l, y = sum w, flags = invalid counts) or
// mean (x = sum, divided by n).
__global__ __launch_bounds__(kFinalThreads) void finalize_kernel(
    int count, Finish finish, double n, const double2* __restrict__ partials,
    const int32_t* __restrict__ flags, float* __restrict__ out) {
  __shared__ double2 s_part[kFinalThreads / 32];
  __shared__ int s_bad[kFinalThreads / 32];
  const int tid = threadIdx.x;
  double2 v = tid < count ? partials[tid] : make_double2(0.0, 0.0);
  int bad = (finish == Finish::kCrossEntropy && tid < count) ? flags[tid] : 0;
  v.x = warp_sum(v.x);
  v.y = warp_sum(v.y);
  bad = warp_sum_int(bad);
  if ((tid & 31) == 0) {
    s_part[tid >> 5] = v;
    s_bad[tid >> 5] = bad;
  }
  __syncthreads();
  if (tid == 0) {
    double2 r = make_double2(0.0, 0.0);
    int total_bad = 0;
    for (int w = 0; w < kFinalThreads / 32; ++w) {
      r.x += s_part[w].x;
      r.y += s_part[w].y;
      total_bad += s_bad[w];
    }
    if (finish == Finish::kCrossEntropy) {
      *out = total_bad > 0 ? __int_as_float(0x7fc00000)  // quiet NaN
                           : (r.y == 0.0 ? 0.0f : static_cast<float>(r.x / r.y));
    } else {
      *out = static_cast<float>(r.x / n);
    }
  }
}

// Sum of the N weights into partials[0].x (one block, fixed order).
__global__ __launch_bounds__(kFinalThreads) void weight_sum_kernel(int64_t N,
                                                                   const float* __restrict__ w,
                                                                   double2* __restrict__ out) {
  __shared__ double s_part[kFinalThreads / 32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += kFinalThreads) acc += static_cast<double>(w[i]);
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double r = 0.0;
    for (int k = 0; k < kFinalThreads / 32; ++k) r += s_part[k];
    *out = make_double2(r, 0.0);
  }
}

// dlogits: a warp per row. weight_total: device pointer to the sum (weights given) or nullptr
// (weights absent: sum = N).
__global__ __launch_bounds__(kThreads) void ce_backward_kernel(
    int64_t N, int64_t K, const float* __restrict__ probs, const int32_t* __restrict__ labels,
    const float* __restrict__ weights, double smoothing, const float* __restrict__ dloss,
    const double2* __restrict__ weight_total, float* __restrict__ dlogits) {
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (i >= N) return;
  const float* pr = probs + i * K;  // (K)
  float* dz = dlogits + i * K;      // (K)
  const double w = weights != nullptr ? static_cast<double>(weights[i]) : 1.0;
  const double total = weight_total != nullptr ? weight_total->x : static_cast<double>(N);
  if (w == 0.0 || total == 0.0) {
    for (int64_t k = lane; k < K; k += 32) dz[k] = 0.0f;
    return;
  }
  const double coef = static_cast<double>(*dloss) * w / total;
  const double q_off = smoothing / static_cast<double>(K);
  const double q_on = (1.0 - smoothing) + q_off;
  const int32_t label = labels[i];
  for (int64_t k = lane; k < K; k += 32) {
    const double q = k == label ? q_on : q_off;
    dz[k] = static_cast<float>(__dmul_rn(coef, __dsub_rn(static_cast<double>(pr[k]), q)));
  }
}

// Stage 1 of the MSE forward: block b sums (pred - target)^2 over [b*chunk, min((b+1)*chunk, n)).
__global__ __launch_bounds__(kThreads) void mse_partials_kernel(int64_t n, int64_t chunk,
                                                                const float* __restrict__ pred,
                                                                const float* __restrict__ target,
                                                                double2* __restrict__ partials) {
  __shared__ double s_part[kWarps];
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t hi = lo + chunk < n ? lo + chunk : n;
  constexpr int U = 4;
  double acc = 0.0;
  for (int64_t i0 = lo + threadIdx.x; i0 < hi; i0 += int64_t{U} * kThreads) {
    float a[U], b[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t i = i0 + int64_t{u} * kThreads;
      a[u] = i < hi ? pred[i] : 0.0f;
      b[u] = i < hi ? target[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const double d = static_cast<double>(a[u]) - static_cast<double>(b[u]);
      acc += d * d;
    }
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double r = 0.0;
    for (int w = 0; w < kWarps; ++w) r += s_part[w];
    partials[blockIdx.x] = make_double2(r, 0.0);
  }
}

// dpred = (float)(coef * (pred - target)), dtarget = (float)(-that), coef = 2 * dloss / n.
__global__ __launch_bounds__(kThreads) void mse_backward_kernel(
    int64_t n, double n_d, const float* __restrict__ pred, const float* __restrict__ target,
    const float* __restrict__ dloss, float* __restrict__ dpred, float* __restrict__ dtarget) {
  // As the CPU: coef = 2 * dloss / n, then one rounded product per element.
  const double coef = 2.0 * static_cast<double>(*dloss) / n_d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double g =
        __dmul_rn(coef, __dsub_rn(static_cast<double>(pred[i]), static_cast<double>(target[i])));
    if (dpred != nullptr) dpred[i] = static_cast<float>(g);
    if (dtarget != nullptr) dtarget[i] = static_cast<float>(-g);
  }
}

}  // namespace

void softmax_cross_entropy_forward_cuda(cudaStream_t stream, int64_t N, int64_t K,
                                        const float* logits, const int32_t* labels,
                                        const float* weights, float smoothing, float* loss,
                                        float* probs, void* workspace) {
  if (N <= 0) {
    PB_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), stream));
    return;
  }
  if (K < 1 || K > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("softmax_cross_entropy_forward_cuda: K = " + std::to_string(K) +
                                " classes (need 1 <= K < 2^31)");
  }
  double2* partials = partials_of(workspace);
  int32_t* flags = flags_of(workspace);
  const double s = static_cast<double>(smoothing);
  int blocks;
  if (K <= kWarpRowMaxK) {
    using Layout = RowLayout<1>;
    blocks = static_cast<int>(std::min<int64_t>(
        (N + Layout::kRowsPerBlock - 1) / Layout::kRowsPerBlock, kReduceCudaMaxBlocks));
    ce_forward_kernel<1>
        <<<blocks, kThreads, 0, stream>>>(N, K, logits, labels, weights, s, probs, partials, flags);
  } else {
    blocks = static_cast<int>(std::min<int64_t>(N, kReduceCudaMaxBlocks));
    ce_forward_kernel<kWarps>
        <<<blocks, kThreads, 0, stream>>>(N, K, logits, labels, weights, s, probs, partials, flags);
  }
  PB_CUDA_LAUNCH_CHECK();
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(blocks, Finish::kCrossEntropy, 0.0, partials,
                                                   flags, loss);
  PB_CUDA_LAUNCH_CHECK();
}

void softmax_cross_entropy_backward_cuda(cudaStream_t stream, int64_t N, int64_t K,
                                         const float* probs, const int32_t* labels,
                                         const float* weights, float smoothing, const float* dloss,
                                         float* dlogits, void* workspace) {
  if (N <= 0 || K <= 0) return;
  const double2* total = nullptr;
  if (weights != nullptr) {
    double2* partials = partials_of(workspace);
    weight_sum_kernel<<<1, kFinalThreads, 0, stream>>>(N, weights, partials);
    PB_CUDA_LAUNCH_CHECK();
    total = partials;
  }
  const int64_t blocks = (N + kWarps - 1) / kWarps;
  ce_backward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      N, K, probs, labels, weights, static_cast<double>(smoothing), dloss, total, dlogits);
  PB_CUDA_LAUNCH_CHECK();
}

void mse_forward_cuda(cudaStream_t stream, int64_t n, const float* pred, const float* target,
                      float* loss, void* workspace) {
  if (n <= 0) {
    PB_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), stream));
    return;
  }
  const int64_t per_block_min = int64_t{kThreads} * 16;
  const int blocks = static_cast<int>(
      std::clamp<int64_t>((n + per_block_min - 1) / per_block_min, 1, kReduceCudaMaxBlocks));
  const int64_t chunk = (n + blocks - 1) / blocks;
  double2* partials = partials_of(workspace);
  mse_partials_kernel<<<blocks, kThreads, 0, stream>>>(n, chunk, pred, target, partials);
  PB_CUDA_LAUNCH_CHECK();
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(blocks, Finish::kMean, static_cast<double>(n),
                                                   partials, nullptr, loss);
  PB_CUDA_LAUNCH_CHECK();
}

void mse_backward_cuda(cudaStream_t stream, int64_t n, const float* pred, const float* target,
                       const float* dloss, float* dpred, float* dtarget) {
  if (n <= 0) return;
  const int blocks =
      static_cast<int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, int64_t{4096}));
  mse_backward_kernel<<<blocks, kThreads, 0, stream>>>(n, static_cast<double>(n), pred, target,
                                                       dloss, dpred, dtarget);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
