// CUDA classification metrics (float): top-k error counts, the same function as
// kernels/cpu/metrics.cpp, with both results left in device memory.
//
// Design: a warp per row (8 rows per 256-thread block, grid-stride over rows with at most
// kReduceCudaMaxBlocks blocks, a function of N only). Lane 0 reads the label's logit; every lane
// counts the logits strictly greater than it over its columns; the warp adds the counts. The row
// is an error when the count is >= k or the label's logit is NaN (as on the CPU). Each block sums
// w_i over its errors and over its rows in a fixed order (double) into a workspace partial; a
// one-block kernel adds the partials in a fixed tree order and writes *errors and *total.
// Rows with w_i == 0 are skipped (label unread). A label outside [0, K) on a row with w_i != 0
// (undefined on the CPU, which does not check) counts as an error and is never used to index.
// Bytes: logits read once, plus labels and weights.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/metrics.h"
#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFinalThreads = 1024;
static_assert(kReduceCudaMaxBlocks <= kFinalThreads, "finalize reads one partial per thread");

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

__global__ __launch_bounds__(kThreads) void topk_partials_kernel(int64_t N, int64_t K, int64_t k,
                                                                 const float* __restrict__ logits,
                                                                 const int32_t* __restrict__ labels,
                                                                 const float* __restrict__ weights,
                                                                 double2* __restrict__ partials) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double err_acc = 0.0, tot_acc = 0.0;  // lane 0: this warp's rows, in order
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < N;
       i += static_cast<int64_t>(gridDim.x) * kWarps) {
    const double w = weights != nullptr ? static_cast<double>(weights[i]) : 1.0;
    if (w == 0.0) continue;  // uniform over the warp
    const int32_t label = labels[i];
    const float* z = logits + i * K;  // (K)
    bool is_error = true;
    if (label >= 0 && label < K) {
      const float target = z[label];
      if (!isnan(target)) {
        int greater = 0;
        for (int64_t j = lane; j < K; j += 32) greater += z[j] > target ? 1 : 0;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1)
          greater += __shfl_xor_sync(0xffffffffu, greater, offset);
        is_error = greater >= k;
      }
    }
    if (is_error) err_acc += w;
    tot_acc += w;
  }
  __shared__ double2 s_acc[kWarps];
  if (lane == 0) s_acc[warp] = make_double2(err_acc, tot_acc);
  __syncthreads();
  if (threadIdx.x == 0) {
    double2 r = make_double2(0.0, 0.0);
    for (int w = 0; w < kWarps; ++w) {
      r.x += s_acc[w].x;
      r.y += s_acc[w].y;
    }
    partials[blockIdx.x] = r;
  }
}

__global__ __launch_bounds__(kFinalThreads) void topk_finalize_kernel(
    int count, const double2* __restrict__ partials, float* __restrict__ errors,
    float* __restrict__ total) {
  __shared__ double2 s_part[kFinalThreads / 32];
  const int tid = threadIdx.x;
  double2 v = tid < count ? partials[tid] : make_double2(0.0, 0.0);
  v.x = warp_sum(v.x);
  v.y = warp_sum(v.y);
  if ((tid & 31) == 0) s_part[tid >> 5] = v;
  __syncthreads();
  if (tid == 0) {
    double2 r = make_double2(0.0, 0.0);
    for (int w = 0; w < kFinalThreads / 32; ++w) {
      r.x += s_part[w].x;
      r.y += s_part[w].y;
    }
    *errors = static_cast<float>(r.x);
    *total = static_cast<float>(r.y);
  }
}

}  // namespace

void topk_error_count_cuda(cudaStream_t stream, int64_t N, int64_t K, int64_t k,
                           const float* logits, const int32_t* labels, const float* weights,
                           float* errors, float* total, void* workspace) {
  if (N <= 0) {
    PB_CUDA_CHECK(cudaMemsetAsync(errors, 0, sizeof(float), stream));
    PB_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(float), stream));
    return;
  }
  if (K < 1 || K > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("topk_error_count_cuda: K = " + std::to_string(K) +
                                " classes (need 1 <= K < 2^31)");
  }
  auto* partials = static_cast<double2*>(workspace);
  const int blocks =
      static_cast<int>(std::min<int64_t>((N + kWarps - 1) / kWarps, kReduceCudaMaxBlocks));
  topk_partials_kernel<<<blocks, kThreads, 0, stream>>>(N, K, k, logits, labels, weights, partials);
  PB_CUDA_LAUNCH_CHECK();
  topk_finalize_kernel<<<1, kFinalThreads, 0, stream>>>(blocks, partials, errors, total);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
