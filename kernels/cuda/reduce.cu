// CUDA reductions to one element (float in, double accumulation): sum, mean, global L2 norm.
//
// Two launches, no atomics, no host sync:
//   1. partials kernel: block b reduces a fixed part of the input to one double (each thread
//      accumulates its elements in a fixed order, then a fixed shuffle tree over the block) and
//      writes workspace[b];
//   2. finalize kernel (one block): reduces the partials in a fixed tree order, applies the final
//      map (identity, / n, sqrt) and writes *out rounded once to float.
// The partition depends only on the sizes (n, or the tensor sizes read on the device), never on
// the GPU, so results are bitwise reproducible from run to run and device to device.
//
// Workspace layout (reduce_cuda_workspace_bytes() = 32 KiB, shared with loss.cu and metrics.cu):
//   [0, 16 KiB)       double2 partials[kReduceCudaMaxBlocks]
//   [16 KiB, 20 KiB)  int32 flags[kReduceCudaMaxBlocks]   (loss.cu: invalid-label counts)
//
// Bytes moved: sum/mean read n floats once (16-byte loads when x is 16-byte aligned);
// global_l2_norm reads every tensor once (16-byte loads for 16-byte aligned tensors) plus
// count * 16 bytes of pointers and sizes per block (from L2).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;        // first-stage block
constexpr int kFinalThreads = 1024;  // finalize block: one thread per possible partial
constexpr int kUnroll = 4;           // independent 16-byte loads in flight per thread
static_assert(kReduceCudaMaxBlocks <= kFinalThreads, "finalize reads one partial per thread");

// Fixed-order warp tree; the full sum lands in lane 0.
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Fixed-order block sum for blockDim.x == kBlock (a multiple of 32, <= 1024); valid in thread 0.
template <int kBlock>
__device__ double block_sum(double v) {
  __shared__ double s_warp[kBlock / 32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_warp[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (warp == 0) {
    total = lane < kBlock / 32 ? s_warp[lane] : 0.0;
    total = warp_sum(total);
  }
  return total;
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

__device__ __forceinline__ double sq(float v) {
  const double d = static_cast<double>(v);
  return d * d;
}

// Sum (kSquare: sum of squares) of x[lo, hi) over the threads of one block, each thread adding its
// elements (stride blockDim.x) into acc. 16-byte loads when x is 16-byte aligned.
template <bool kSquare>
__device__ void accumulate_range(const float* __restrict__ x, int64_t lo, int64_t hi, double& acc) {
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  auto term = [](float v) { return kSquare ? sq(v) : static_cast<double>(v); };
  if ((reinterpret_cast<uintptr_t>(x) & 15u) == 0) {
    // Head [lo, a) and tail [b, hi) are scalar; the body [a, b) is float4 (a, b multiples of 4).
    const int64_t a = min64((lo + 3) & ~int64_t{3}, hi);
    const int64_t b = max64(hi & ~int64_t{3}, a);
    if (tid < a - lo) acc += term(x[lo + tid]);
    if (tid < hi - b) acc += term(x[b + tid]);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int64_t v_end = b / 4;
    for (int64_t i = a / 4 + tid; i < v_end; i += int64_t{kUnroll} * nthreads) {
      float4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = i + int64_t{u} * nthreads;
        v[u] = k < v_end ? x4[k] : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        acc += (term(v[u].x) + term(v[u].y)) + (term(v[u].z) + term(v[u].w));
    }
  } else {
    for (int64_t i = lo + tid; i < hi; i += int64_t{kUnroll} * nthreads) {
      float v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = i + int64_t{u} * nthreads;
        v[u] = k < hi ? x[k] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) acc += term(v[u]);
    }
  }
}

// Stage 1 of sum/mean: block b reduces x[b*chunk, min((b+1)*chunk, n)), chunk a multiple of 4.
__global__ __launch_bounds__(kThreads) void sum_partials_kernel(int64_t n, int64_t chunk,
                                                                const float* __restrict__ x,
                                                                double2* __restrict__ partials) {
  const int64_t lo = blockIdx.x * chunk;
  const int64_t hi = min64(lo + chunk, n);
  double acc = 0.0;
  if (lo < hi) accumulate_range<false>(x, lo, hi, acc);
  acc = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = make_double2(acc, 0.0);
}

// Inclusive block scan of one int64 per thread (blockDim.x == kThreads); every thread gets its
// prefix; s_warp is scratch of kThreads / 32 entries. Ends with a barrier.
__device__ int64_t block_inclusive_scan(int64_t v, int64_t* s_warp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int64_t up = __shfl_up_sync(0xffffffffu, v, offset);
    if (lane >= offset) v += up;
  }
  if (lane == 31) s_warp[warp] = v;
  __syncthreads();
  int64_t before = 0;
  for (int w = 0; w < warp; ++w) before += s_warp[w];
  __syncthreads();  // s_warp may be reused by the caller's next scan
  return v + before;
}

// Stage 1 of global_l2_norm. The tensors are laid end to end in a virtual index space of
// total = sum(sizes) elements; block b sums the squares of the virtual range
// [b*chunk, min((b+1)*chunk, total)), chunk = ceil(total / gridDim.x) rounded up to a multiple of
// 4 (so a range is most often one contiguous piece of one tensor). Every block first computes
// total, then walks the size array a tile of kThreads entries at a time (block scan), and sums
// each tensor piece that overlaps its range.
__global__ __launch_bounds__(kThreads,
                             4) void l2_partials_kernel(int count,
                                                        const float* const* __restrict__ ptrs,
                                                        const int64_t* __restrict__ sizes,
                                                        double2* __restrict__ partials) {
  __shared__ int64_t s_warp[kThreads / 32];
  __shared__ int64_t s_incl[kThreads];  // inclusive prefix of the current tile (+ tile base)
  __shared__ int64_t s_total;
  const int tid = threadIdx.x;

  // total = sum of sizes (int64, exact in any order).
  int64_t mine = 0;
  for (int t = tid; t < count; t += kThreads) mine += sizes[t];
  const int64_t total_scan = block_inclusive_scan(mine, s_warp);
  if (tid == kThreads - 1) s_total = total_scan;
  __syncthreads();
  const int64_t total = s_total;
  int64_t chunk = (total + gridDim.x - 1) / gridDim.x;
  chunk = (chunk + 3) & ~int64_t{3};
  const int64_t r0 = blockIdx.x * chunk;
  const int64_t r1 = min64(r0 + chunk, total);

  double acc = 0.0;
  int64_t base = 0;  // virtual start of the current tile
  for (int t0 = 0; t0 < count && base < r1 && r0 < r1; t0 += kThreads) {
    const int t = t0 + tid;
    const int64_t incl = block_inclusive_scan(t < count ? sizes[t] : 0, s_warp);
    s_incl[tid] = base + incl;
    __syncthreads();
    const int n_tile = count - t0 < kThreads ? count - t0 : kThreads;
    // First tile entry whose end lies beyond r0 (binary search over the sorted ends).
    int first = 0, last = n_tile;
    while (first < last) {
      const int mid = (first + last) / 2;
      if (s_incl[mid] <= r0)
        first = mid + 1;
      else
        last = mid;
    }
    for (int k = first; k < n_tile; ++k) {  // uniform over the block
      const int64_t end_v = s_incl[k];
      const int64_t start_v = k > 0 ? s_incl[k - 1] : base;
      if (start_v >= r1) break;
      const int64_t lo = max64(start_v, r0) - start_v;
      const int64_t hi = min64(end_v, r1) - start_v;
      if (lo < hi) accumulate_range<true>(ptrs[t0 + k], lo, hi, acc);
    }
    base = s_incl[n_tile - 1];
    __syncthreads();  // s_incl is rewritten by the next tile
  }
  acc = block_sum<kThreads>(acc);
  if (tid == 0) partials[blockIdx.x] = make_double2(acc, 0.0);
}

enum class Finish { kSum, kMean, kSqrt };

// Stage 2: one block of kFinalThreads; thread t takes partial t (fixed tree order).
__global__ __launch_bounds__(kFinalThreads) void finalize_kernel(
    int num_partials, Finish finish, double n, const double2* __restrict__ partials,
    float* __restrict__ out) {
  const int tid = threadIdx.x;
  double v = tid < num_partials ? partials[tid].x : 0.0;
  v = block_sum<kFinalThreads>(v);
  if (tid == 0) {
    if (finish == Finish::kMean) v = v / n;
    if (finish == Finish::kSqrt) v = sqrt(v);
    *out = static_cast<float>(v);
  }
}

void launch_sum(cudaStream_t stream, int64_t n, const float* x, float* out, void* workspace,
                Finish finish) {
  if (n <= 0) {
    PB_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), stream));
    return;
  }
  // At least 16 elements per thread, at most kReduceCudaMaxBlocks blocks; chunk a multiple of 4.
  const int64_t per_block_min = int64_t{kThreads} * 16;
  const int blocks = static_cast<int>(
      std::clamp<int64_t>((n + per_block_min - 1) / per_block_min, 1, kReduceCudaMaxBlocks));
  int64_t chunk = (n + blocks - 1) / blocks;
  chunk = (chunk + 3) & ~int64_t{3};
  auto* partials = static_cast<double2*>(workspace);
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(n, chunk, x, partials);
  PB_CUDA_LAUNCH_CHECK();
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(blocks, finish, static_cast<double>(n), partials,
                                                   out);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace

int64_t reduce_cuda_workspace_bytes() {
  return 32 * 1024;
}
static_assert(kReduceCudaMaxBlocks * (sizeof(double2) + sizeof(int32_t)) <= 32 * 1024,
              "workspace layout: partials then flags");

void sum_cuda(cudaStream_t stream, int64_t n, const float* x, float* out, void* workspace) {
  launch_sum(stream, n, x, out, workspace, Finish::kSum);
}

void mean_cuda(cudaStream_t stream, int64_t n, const float* x, float* out, void* workspace) {
  launch_sum(stream, n, x, out, workspace, Finish::kMean);
}

void global_l2_norm_cuda(cudaStream_t stream, int count, const float* const* d_ptrs,
                         const int64_t* d_sizes, float* out, void* workspace) {
  if (count <= 0) {
    PB_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), stream));
    return;
  }
  // The total size is only known on the device, so the grid is the constant maximum.
  auto* partials = static_cast<double2*>(workspace);
  l2_partials_kernel<<<kReduceCudaMaxBlocks, kThreads, 0, stream>>>(count, d_ptrs, d_sizes,
                                                                    partials);
  PB_CUDA_LAUNCH_CHECK();
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(kReduceCudaMaxBlocks, Finish::kSqrt, 0.0,
                                                   partials, out);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
