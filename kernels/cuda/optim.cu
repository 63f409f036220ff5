// CUDA optimizer updates and multi-tensor helpers (float), computing the same functions as
// kernels/cpu/optim.cpp with the same per-element code (kernels/optim.h, optim_detail).
//
// Multi-tensor apply. Every parameter tensor is cut into chunks of kChunk elements (the last
// chunk of a tensor may be shorter); block b of a launch updates one chunk. The tensor list
// travels in the kernel's argument struct (UpdateList / PairList, passed as __grid_constant__,
// so it is read from the constant bank and never copied to local memory): per tensor its
// pointers, size, weight decay, and the prefix sum chunk_begin of its chunk count. A block finds
// its tensor by binary search over chunk_begin (uniform over the block: one constant-bank
// broadcast per probe). Kernel arguments may take up to 32764 bytes on sm_70 and newer with CUDA
// >= 12.1, which holds kOptimCudaMaxTensorsPerLaunch = 512 tensors (static_assert below); a list
// that long, ResNet-50's 161 tensors or ResNet-152's 467, is ONE launch. Longer lists take
// ceil(count / 512) launches. Lists of <= 32 tensors use a 32-entry struct so that small models
// do not ship 29 KB of arguments with every launch. No metadata lives in device memory, so a new
// gradient pointer every step (autograd allocates fresh gradients) costs nothing and the host
// never waits for the device.
//
// Inside a chunk each thread moves 16-byte vectors (float4) when every pointer of the tensor is
// 16-byte aligned (chunk starts are multiples of 4 elements), with a scalar tail; otherwise
// scalar loads throughout. Bytes per element: adam/nadam/adamw read param, grad, m, v and write
// param, m, v (28 B); sgd 12 B; momentum/nesterov/lars 20 B; rmsprop 28 B; lamb 40 B over two
// passes; lars 28 B over two passes.
//
// LARS and LAMB need per-tensor norms before the update: launch 1 (norms_kernel) sums squares per
// chunk in double (fixed thread order, fixed shuffle tree), writes one partial per chunk, and the
// last block to finish a tensor (an atomic counter per tensor) adds the tensor's partials in a
// fixed order and writes its norms; LAMB's launch 1 also updates the moments. Launch 2
// (update_kernel) reads the norms and applies the update. The partition is a function of the
// sizes only, so results are bitwise reproducible run to run.
//
// Workspace counters. The workspace is carved per call (partials, norms, counters), so the
// counters' offset depends on this call's tensor and chunk counts: when a step updates fewer
// tensors than an earlier one (parameters without a gradient are left out of the list), the
// counters land where that earlier step left partial sums. The launcher therefore zeroes the
// counter region on the stream before launch 1 (cudaMemsetAsync, a few bytes per tensor, no host
// sync), so no call depends on what an earlier call left in the workspace.
//
// Results vs the CPU: nvcc contracts a * b + c into fma where the x86-64 build rounds twice, and
// the norms are summed in a different (tree) order, so elements differ by a few ulp per step;
// tests/cuda/test_optim_cuda.cpp gives the bounds.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/optim.h"

namespace pb::kernels {
namespace {

using optim_detail::Constants;

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block; a multiple of 4 (float4 alignment)
static_assert(kChunk % 4 == 0, "chunks must start on 16-byte boundaries");
constexpr int kSmallCap = 32;
constexpr int kLargeCap = kOptimCudaMaxTensorsPerLaunch;
constexpr std::size_t kMaxKernelArgBytes = 32764;  // sm_70+, CUDA >= 12.1

// ---- tensor lists in the kernel arguments ------------------------------------------------------

template <int Cap>
struct UpdateList {
  float* param[Cap];
  const float* grad[Cap];
  float* slot0[Cap];
  float* slot1[Cap];
  float* update[Cap];
  int64_t n[Cap];
  float weight_decay[Cap];
  int32_t chunk_begin[Cap + 1];  // tensor t owns blocks [chunk_begin[t], chunk_begin[t + 1])
  uint8_t adapt[Cap];
  int32_t count;
  int32_t first_tensor;  // index of entry 0 in the caller's list (norms, counters)
  int32_t first_chunk;   // chunks of the caller's list before entry 0 (partials)
};
// The other arguments of the update kernels (constants, pointers) stay below 256 bytes.
static_assert(sizeof(UpdateList<kLargeCap>) + 256 <= kMaxKernelArgBytes,
              "the update list must fit in the kernel arguments: lower "
              "kOptimCudaMaxTensorsPerLaunch");

template <int Cap>
struct PairList {
  float* x[Cap];
  float* y[Cap];
  int64_t n[Cap];
  int32_t chunk_begin[Cap + 1];
  int32_t count;
};
static_assert(sizeof(PairList<kLargeCap>) + 256 <= kMaxKernelArgBytes,
              "the pair list must fit in the kernel arguments");

int64_t chunks_of(int64_t n) {
  return (n + kChunk - 1) / kChunk;
}

// The tensor of block b: the largest t with chunk_begin[t] <= b (tensors without elements own no
// block, so the search skips them).
__device__ __forceinline__ int find_tensor(const int32_t* chunk_begin, int count, int32_t b) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (chunk_begin[mid] <= b) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

__device__ __forceinline__ void load4(const float* p, int64_t i, float (&r)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p + i);
  r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
__device__ __forceinline__ void store4(float* p, int64_t i, const float (&r)[4]) {
  *reinterpret_cast<float4*>(p + i) = make_float4(r[0], r[1], r[2], r[3]);
}

// Loads/stores W consecutive elements starting at i (W = 4: one float4, aligned; W = 1: scalar).
template <int W>
__device__ __forceinline__ void load(const float* p, int64_t i, float (&r)[W]) {
  if constexpr (W == 4) {
    load4(p, i, r);
  } else {
    r[0] = p[i];
  }
}
template <int W>
__device__ __forceinline__ void store(float* p, int64_t i, const float (&r)[W]) {
  if constexpr (W == 4) {
    store4(p, i, r);
  } else {
    p[i] = r[0];
  }
}

// Fixed-order sums over a block of kThreads threads; the result is valid in thread 0. Starts with
// a barrier so that back-to-back calls may reuse the shared scratch.
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}
__device__ double2 block_sum2(double a, double b) {
  __shared__ double2 s_warp[kThreads / 32];
  __syncthreads();
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_warp[warp] = make_double2(a, b);
  __syncthreads();
  double2 total = make_double2(0.0, 0.0);
  if (warp == 0) {
    const double2 v = lane < kThreads / 32 ? s_warp[lane] : make_double2(0.0, 0.0);
    total = make_double2(warp_sum(v.x), warp_sum(v.y));
  }
  return total;
}

// ---- the update --------------------------------------------------------------------------------

// Which arrays a rule's pass touches.
template <OptimRule R, bool kSecondPassOfLamb>
struct Traffic {
  static constexpr int kSlots = optim_slot_count(R);
  static constexpr bool kReadsGrad = !kSecondPassOfLamb;
  static constexpr bool kWritesSlots = !kSecondPassOfLamb;
};

// Elements [i, i + W) of tensor t: the update (param or update buffer, and the slots).
template <OptimRule R, int W, int Cap>
__device__ __forceinline__ void update_elements(const UpdateList<Cap>& list, int t, int64_t i,
                                                const Constants<float>& c, float s, bool scaled,
                                                float tau) {
  using Io = Traffic<R, R == OptimRule::kLamb>;
  float theta[W], g[W], s0[W] = {}, s1[W] = {}, d[W];
  load<W>(list.param[t], i, theta);
  if constexpr (Io::kReadsGrad) {
    load<W>(list.grad[t], i, g);
    if (scaled) {
#pragma unroll
      for (int k = 0; k < W; ++k) g[k] = g[k] * s;
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) g[k] = 0.0f;
  }
  if constexpr (Io::kSlots >= 1) load<W>(list.slot0[t], i, s0);
  if constexpr (Io::kSlots >= 2) load<W>(list.slot1[t], i, s1);
  const float wd = list.weight_decay[t];
#pragma unroll
  for (int k = 0; k < W; ++k) {
    d[k] = optim_detail::step_of<R, float>(c, theta[k], g[k], wd, tau, s0[k], s1[k]);
  }
  if constexpr (Io::kWritesSlots && Io::kSlots >= 1) store<W>(list.slot0[t], i, s0);
  if constexpr (Io::kWritesSlots && Io::kSlots >= 2) store<W>(list.slot1[t], i, s1);
  if (list.update[t] != nullptr) {
    store<W>(list.update[t], i, d);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) d[k] = theta[k] - d[k];
    store<W>(list.param[t], i, d);
  }
}

// One block per chunk. norms: per-tensor (||theta||, ||g or r||) from norms_kernel (lars, lamb).
template <OptimRule R, int Cap>
__global__ __launch_bounds__(kThreads) void update_kernel(
    const __grid_constant__ UpdateList<Cap> list, const Constants<float> c, const float* grad_scale,
    const double2* norms, double trust_coefficient, double eps) {
  const int t = find_tensor(list.chunk_begin, list.count, static_cast<int32_t>(blockIdx.x));
  const int64_t lo = static_cast<int64_t>(blockIdx.x - list.chunk_begin[t]) * kChunk;
  const int64_t hi = min64(lo + kChunk, list.n[t]);
  const bool scaled = grad_scale != nullptr;
  const float s = scaled ? *grad_scale : 1.0f;

  float tau = 1.0f;
  if constexpr (optim_layerwise(R)) {
    if (list.adapt[t]) {
      const double2 nrm = norms[list.first_tensor + t];
      if constexpr (R == OptimRule::kLars) {
        tau = static_cast<float>(optim_detail::lars_trust_ratio(
            nrm.x, nrm.y, static_cast<double>(list.weight_decay[t]), trust_coefficient, eps));
      } else {
        tau = static_cast<float>(optim_detail::lamb_trust_ratio(nrm.x, nrm.y));
      }
    }
  }

  const bool vec = aligned16(list.param[t]) && aligned16(list.grad[t]) &&
                   aligned16(list.slot0[t]) && aligned16(list.slot1[t]) &&
                   aligned16(list.update[t]);
  int64_t scalar_from = lo;
  if (vec) {
    const int64_t vec_end = lo + ((hi - lo) & ~int64_t{3});
    for (int64_t i = lo + 4 * static_cast<int64_t>(threadIdx.x); i < vec_end; i += 4 * kThreads) {
      update_elements<R, 4>(list, t, i, c, s, scaled, tau);
    }
    scalar_from = vec_end;
  }
  for (int64_t i = scalar_from + threadIdx.x; i < hi; i += kThreads) {
    update_elements<R, 1>(list, t, i, c, s, scaled, tau);
  }
}

// Launch 1 of lars/lamb: per-chunk sums of squares of theta and of the scaled gradient (lars) or
// of lamb's direction r (after updating the moments), then per-tensor norms by the last block.
// Workspace: partials (double2 per chunk), norms (double2 per tensor), counters (uint per tensor,
// zeroed by the launcher before this launch).
template <OptimRule R, int Cap>
__global__ __launch_bounds__(kThreads) void norms_kernel(
    const __grid_constant__ UpdateList<Cap> list, const Constants<float> c, const float* grad_scale,
    double2* partials, double2* norms, unsigned* counters) {
  __shared__ bool s_last;
  const int t = find_tensor(list.chunk_begin, list.count, static_cast<int32_t>(blockIdx.x));
  const int64_t lo = static_cast<int64_t>(blockIdx.x - list.chunk_begin[t]) * kChunk;
  const int64_t hi = min64(lo + kChunk, list.n[t]);
  const bool scaled = grad_scale != nullptr;
  const float s = scaled ? *grad_scale : 1.0f;
  const float wd = list.weight_decay[t];
  const float* param = list.param[t];
  const float* grad = list.grad[t];
  float* m = list.slot0[t];
  float* v = list.slot1[t];

  // Scalar loads: this pass reads 8 B (lars) or 16 B (lamb) per element and writes 8 B (lamb);
  // a thread's elements are i = lo + tid + k * kThreads, coalesced across the warp.
  double sq_param = 0.0, sq_other = 0.0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const float theta = param[i];
    float g = grad[i];
    if (scaled) g = g * s;
    sq_param += static_cast<double>(theta) * static_cast<double>(theta);
    if constexpr (R == OptimRule::kLars) {
      sq_other += static_cast<double>(g) * static_cast<double>(g);
    } else {
      float mi = m[i], vi = v[i];
      optim_detail::update_moments(c, g, mi, vi);
      m[i] = mi;
      v[i] = vi;
      const double r = static_cast<double>(optim_detail::lamb_direction(c, theta, mi, vi, wd));
      sq_other += r * r;
    }
  }
  const double2 sums = block_sum2(sq_param, sq_other);

  const int32_t first = list.chunk_begin[t];
  const int32_t nchunks = list.chunk_begin[t + 1] - first;
  if (threadIdx.x == 0) {
    partials[list.first_chunk + blockIdx.x] = sums;
    __threadfence();  // the partial is visible before the counter says so
    const unsigned done = atomicAdd(&counters[list.first_tensor + t], 1u);
    s_last = done == static_cast<unsigned>(nchunks - 1);
  }
  __syncthreads();
  if (!s_last) return;

  // The last block of tensor t: its partials in a fixed order (thread k takes k, k + kThreads..).
  __threadfence();
  double a = 0.0, b = 0.0;
  for (int32_t k = threadIdx.x; k < nchunks; k += kThreads) {
    const double2 p = __ldcg(&partials[list.first_chunk + first + k]);
    a += p.x;
    b += p.y;
  }
  const double2 total = block_sum2(a, b);
  if (threadIdx.x == 0) norms[list.first_tensor + t] = make_double2(sqrt(total.x), sqrt(total.y));
}

// Workspace layout of lars/lamb for `count` tensors holding `chunks` chunks in all.
struct Workspace {
  double2* partials;
  double2* norms;
  unsigned* counters;
};
int64_t workspace_bytes(int64_t count, int64_t chunks) {
  return static_cast<int64_t>(sizeof(double2)) * (chunks + count) +
         static_cast<int64_t>(sizeof(unsigned)) * count;
}
Workspace carve(void* base, int64_t count, int64_t chunks) {
  auto* p = static_cast<double2*>(base);
  return {p, p + chunks, reinterpret_cast<unsigned*>(p + chunks + count)};
}

template <int Cap>
void fill_update_list(UpdateList<Cap>& list, const OptimTensor<float>* tensors, int64_t begin,
                      int64_t end, int64_t first_chunk) {
  list.count = static_cast<int32_t>(end - begin);
  list.first_tensor = static_cast<int32_t>(begin);
  list.first_chunk = static_cast<int32_t>(first_chunk);
  int32_t chunk = 0;
  for (int64_t k = begin; k < end; ++k) {
    const OptimTensor<float>& src = tensors[k];
    const int j = static_cast<int>(k - begin);
    list.param[j] = src.param;
    list.grad[j] = src.grad;
    list.slot0[j] = src.slot0;
    list.slot1[j] = src.slot1;
    list.update[j] = src.update;
    list.n[j] = src.n;
    list.weight_decay[j] = src.weight_decay;
    list.adapt[j] = src.adapt ? 1 : 0;
    list.chunk_begin[j] = chunk;
    chunk += static_cast<int32_t>(chunks_of(src.n));
  }
  list.chunk_begin[end - begin] = chunk;
}

template <OptimRule R, int Cap>
void launch_update_group(cudaStream_t stream, const OptimStep& step, const Constants<float>& c,
                         const OptimTensor<float>* tensors, int64_t begin, int64_t end,
                         int64_t first_chunk, const float* grad_scale, const Workspace& ws) {
  UpdateList<Cap> list{};
  fill_update_list(list, tensors, begin, end, first_chunk);
  const int blocks = list.chunk_begin[list.count];
  if (blocks == 0) return;
  if constexpr (optim_layerwise(R)) {
    norms_kernel<R, Cap>
        <<<blocks, kThreads, 0, stream>>>(list, c, grad_scale, ws.partials, ws.norms, ws.counters);
    PB_CUDA_LAUNCH_CHECK();
  }
  update_kernel<R, Cap><<<blocks, kThreads, 0, stream>>>(list, c, grad_scale, ws.norms,
                                                         step.trust_coefficient, step.eps);
  PB_CUDA_LAUNCH_CHECK();
}

template <OptimRule R>
void launch_update(cudaStream_t stream, const OptimStep& step, int64_t count,
                   const OptimTensor<float>* tensors, const float* grad_scale, void* workspace) {
  const Constants<float> c = optim_detail::constants<float>(step);
  int64_t total_chunks = 0;
  for (int64_t k = 0; k < count; ++k) total_chunks += chunks_of(tensors[k].n);
  if (total_chunks > INT32_MAX) {
    throw std::invalid_argument("optim_update_cuda: more than 2^31 chunks of 4096 elements");
  }
  Workspace ws{nullptr, nullptr, nullptr};
  if constexpr (optim_layerwise(R)) {
    if (workspace == nullptr) {
      throw std::invalid_argument("optim_update_cuda: lars/lamb need a workspace");
    }
    ws = carve(workspace, count, total_chunks);
    // Counters start at zero on every call, wherever this call's layout puts them (see the
    // "Workspace counters" note at the top).
    PB_CUDA_CHECK(
        cudaMemsetAsync(ws.counters, 0, sizeof(unsigned) * static_cast<size_t>(count), stream));
  }
  int64_t first_chunk = 0;
  for (int64_t begin = 0; begin < count; begin += kLargeCap) {
    const int64_t end = std::min<int64_t>(begin + kLargeCap, count);
    if (end - begin <= kSmallCap) {
      launch_update_group<R, kSmallCap>(stream, step, c, tensors, begin, end, first_chunk,
                                        grad_scale, ws);
    } else {
      launch_update_group<R, kLargeCap>(stream, step, c, tensors, begin, end, first_chunk,
                                        grad_scale, ws);
    }
    for (int64_t k = begin; k < end; ++k) first_chunk += chunks_of(tensors[k].n);
  }
}

// ---- pair lists --------------------------------------------------------------------------------

// y = keep * y + take * x
struct EmaOp {
  float keep, take;
  static constexpr bool kReadsX = true, kReadsY = true, kWritesX = false, kWritesY = true;
  __device__ void load() {}
  __device__ bool skip() const { return false; }
  __device__ void operator()(float& x, float& y) const { y = keep * y + take * x; }
};
// x <-> y (pair_elements stores what it loaded from x into y and vice versa)
struct SwapOp {
  static constexpr bool kReadsX = true, kReadsY = true;
  __device__ void load() {}
  __device__ bool skip() const { return false; }
};
// x -= s * y, s = *scale read once per block
struct ApplyScaledOp {
  const float* scale;
  float s = 0.0f;
  static constexpr bool kReadsX = true, kReadsY = true, kWritesX = true, kWritesY = false;
  __device__ void load() { s = *scale; }
  __device__ bool skip() const { return false; }
  __device__ void operator()(float& x, float& y) const { x = x - s * y; }
};
// x *= s, s = *scale read once per block; nothing when s == 1
struct ScaleOp {
  const float* scale;
  float s = 0.0f;
  static constexpr bool kReadsX = true, kReadsY = false, kWritesX = true, kWritesY = false;
  __device__ void load() { s = *scale; }
  __device__ bool skip() const { return s == 1.0f; }
  __device__ void operator()(float& x, float& /*y*/) const { x = s * x; }
};

template <class Op, int W, int Cap>
__device__ __forceinline__ void pair_elements(const PairList<Cap>& list, int t, int64_t i,
                                              const Op& op) {
  float x[W] = {}, y[W] = {};
  if constexpr (Op::kReadsX) load<W>(list.x[t], i, x);
  if constexpr (Op::kReadsY) load<W>(list.y[t], i, y);
  if constexpr (std::is_same_v<Op, SwapOp>) {
    store<W>(list.x[t], i, y);
    store<W>(list.y[t], i, x);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) op(x[k], y[k]);
    if constexpr (Op::kWritesX) store<W>(list.x[t], i, x);
    if constexpr (Op::kWritesY) store<W>(list.y[t], i, y);
  }
}

template <class Op, int Cap>
__global__ __launch_bounds__(kThreads) void pair_kernel(const __grid_constant__ PairList<Cap> list,
                                                        const Op op_in) {
  Op op = op_in;
  op.load();
  if (op.skip()) return;
  const int t = find_tensor(list.chunk_begin, list.count, static_cast<int32_t>(blockIdx.x));
  const int64_t lo = static_cast<int64_t>(blockIdx.x - list.chunk_begin[t]) * kChunk;
  const int64_t hi = min64(lo + kChunk, list.n[t]);
  int64_t scalar_from = lo;
  if (aligned16(list.x[t]) && aligned16(list.y[t])) {
    const int64_t vec_end = lo + ((hi - lo) & ~int64_t{3});
    for (int64_t i = lo + 4 * static_cast<int64_t>(threadIdx.x); i < vec_end; i += 4 * kThreads) {
      pair_elements<Op, 4>(list, t, i, op);
    }
    scalar_from = vec_end;
  }
  for (int64_t i = scalar_from + threadIdx.x; i < hi; i += kThreads) {
    pair_elements<Op, 1>(list, t, i, op);
  }
}

template <int Cap>
int32_t fill_pair_list(PairList<Cap>& list, const TensorPair<float>* pairs, int64_t begin,
                       int64_t end) {
  list.count = static_cast<int32_t>(end - begin);
  int64_t chunk = 0;
  for (int64_t k = begin; k < end; ++k) {
    const int j = static_cast<int>(k - begin);
    list.x[j] = pairs[k].x;
    // Ops that do not read y get x (any valid pointer keeps the alignment test meaningful).
    list.y[j] = pairs[k].y != nullptr ? pairs[k].y : pairs[k].x;
    list.n[j] = pairs[k].n;
    list.chunk_begin[j] = static_cast<int32_t>(chunk);
    chunk += chunks_of(pairs[k].n);
  }
  if (chunk > INT32_MAX) throw std::invalid_argument("optim: more than 2^31 chunks in one list");
  list.chunk_begin[end - begin] = static_cast<int32_t>(chunk);
  return static_cast<int32_t>(chunk);
}

template <class Op>
void launch_pairs(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                  const Op& op) {
  for (int64_t begin = 0; begin < count; begin += kLargeCap) {
    const int64_t end = std::min<int64_t>(begin + kLargeCap, count);
    if (end - begin <= kSmallCap) {
      PairList<kSmallCap> list{};
      const int32_t blocks = fill_pair_list(list, pairs, begin, end);
      if (blocks == 0) continue;
      pair_kernel<Op, kSmallCap><<<blocks, kThreads, 0, stream>>>(list, op);
    } else {
      PairList<kLargeCap> list{};
      const int32_t blocks = fill_pair_list(list, pairs, begin, end);
      if (blocks == 0) continue;
      pair_kernel<Op, kLargeCap><<<blocks, kThreads, 0, stream>>>(list, op);
    }
    PB_CUDA_LAUNCH_CHECK();
  }
}

// () scale = norm > max_norm ? max_norm / norm : 1; one thread.
__global__ void clip_coefficient_kernel(const float* norm, float max_norm, bool active,
                                        float* scale, double* clipped_count) {
  const float value = *norm;
  const bool clip = active && value > max_norm;
  *scale = clip ? max_norm / value : 1.0f;
  if (clip) *clipped_count += 1.0;
}

}  // namespace

int64_t optim_cuda_workspace_bytes(OptimRule rule, int64_t count,
                                   const OptimTensor<float>* tensors) {
  if (!optim_layerwise(rule)) return 0;
  int64_t chunks = 0;
  for (int64_t k = 0; k < count; ++k) chunks += chunks_of(tensors[k].n);
  return workspace_bytes(count, chunks);
}

void optim_update_cuda(cudaStream_t stream, const OptimStep& step, int64_t count,
                       const OptimTensor<float>* tensors, const float* grad_scale,
                       void* workspace) {
  if (count <= 0) return;
  switch (step.rule) {
    case OptimRule::kSgd:
      return launch_update<OptimRule::kSgd>(stream, step, count, tensors, grad_scale, workspace);
    case OptimRule::kMomentum:
      return launch_update<OptimRule::kMomentum>(stream, step, count, tensors, grad_scale,
                                                 workspace);
    case OptimRule::kNesterov:
      return launch_update<OptimRule::kNesterov>(stream, step, count, tensors, grad_scale,
                                                 workspace);
    case OptimRule::kRmsProp:
      return launch_update<OptimRule::kRmsProp>(stream, step, count, tensors, grad_scale,
                                                workspace);
    case OptimRule::kAdam:
      return launch_update<OptimRule::kAdam>(stream, step, count, tensors, grad_scale, workspace);
    case OptimRule::kNAdam:
      return launch_update<OptimRule::kNAdam>(stream, step, count, tensors, grad_scale, workspace);
    case OptimRule::kAdamW:
      return launch_update<OptimRule::kAdamW>(stream, step, count, tensors, grad_scale, workspace);
    case OptimRule::kLars:
      return launch_update<OptimRule::kLars>(stream, step, count, tensors, grad_scale, workspace);
    case OptimRule::kLamb:
      return launch_update<OptimRule::kLamb>(stream, step, count, tensors, grad_scale, workspace);
  }
}

void ema_update_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                     float decay) {
  // 1 - decay in double, rounded once: the CPU kernel's constant.
  const float take = static_cast<float>(1.0 - static_cast<double>(decay));
  launch_pairs(stream, count, pairs, EmaOp{decay, take});
}

void swap_tensors_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs) {
  launch_pairs(stream, count, pairs, SwapOp{});
}

void apply_scaled_update_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                              const float* scale) {
  launch_pairs(stream, count, pairs, ApplyScaledOp{scale, 0.0f});
}

void scale_tensors_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                        const float* scale) {
  launch_pairs(stream, count, pairs, ScaleOp{scale, 0.0f});
}

void clip_coefficient_cuda(cudaStream_t stream, const float* norm, float max_norm, float* scale,
                           double* clipped_count) {
  const bool active = max_norm > 0.0f && max_norm <= 3.402823466e38f;  // finite and positive
  clip_coefficient_kernel<<<1, 1, 0, stream>>>(norm, max_norm, active, scale, clipped_count);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace pb::kernels
