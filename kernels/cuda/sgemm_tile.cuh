#pragma once
// The FP32 tiled-GEMM core shared by kernels/cuda/gemm.cu and kernels/cuda/conv2d.cu.
//
// A thread block computes one (BM,BN) tile of C = A * B over the reduction dimension in depth-8
// steps ("K tiles"). How the (BM,kBK) slice of A and the (kBK,BN) slice of B are fetched is up to
// a Loader (a strided matrix for the GEMM, an on-the-fly gather for implicit-GEMM convolution);
// everything after the fetch lives here:
//
//   shared memory   stages holding sA (kBK, BM+4) and sB (kBK, BN+4), both k-major so that a
//                   thread reads 4 consecutive m (or n) with one 128-bit load. The 4-float row
//                   padding keeps float4 alignment and makes the loaders' transposed scalar
//                   stores conflict-free (a row step moves 4 banks).
//   threads         BM*BN/64 per block, each owning an 8x8 register tile of C made of four 4x4
//                   pieces: rows {4ty..4ty+3} and {BM/2+4ty..}, columns {4tx..4tx+3} and
//                   {BN/2+4tx..}. A warp is a 4 (ty) x 8 (tx) patch of threads, so per k step its
//                   fragment reads touch 4 distinct float4 of sA and 8 of sB (one 128-byte row
//                   segment, broadcast within each group of 8 lanes): 4 LDS.128 per 64 FFMA.
//   registers       64 accumulators + 16 fragment values (+16 prefetched) + loader state;
//                   __launch_bounds__(threads, 512/threads) caps a kernel at 128 registers so
//                   that 512 threads (e.g. two 256-thread blocks) fit on an SM. Values needed only
//                   after the main loop (tile origin, thread coordinates) are recomputed there
//                   (fresh_block_x() ...) instead of being kept live across it.
//
// Two pipelines share the tile arithmetic:
//
// mainloop (register-staged double buffer, used by the GEMM, whose operands allow 128-bit loads):
//   per K tile: issue the global loads of tile t+1 into registers, run the 8 k steps of FFMAs on
//   stage t%2, store the registers into stage (t+1)%2, one __syncthreads(). The barrier at the end
//   of step t-1 guarantees nobody still reads stage (t+1)%2 when it is overwritten, and the one at
//   the end of step t that it is complete before anyone reads it. Loader:
//   __device__ void load();                      // global -> registers for the next K tile
//   __device__ void store(float* sA, float* sB);  // registers -> stage: sA (kBK, BM+4),
//                                                 //                    sB (kBK, BN+4)
//
// mainloop_async (used by implicit-GEMM convolution, whose gathered operands are read one float
// at a time): kAsyncStages = 3 shared-memory stages filled by 4-byte cp.async copies (global ->
// shared without registers, zero-fill for padding), one barrier per K tile:
//   iteration t:  wait for this thread's copies of tile t; __syncthreads() (now every copy of
//                 tile t has landed, and everyone has finished computing tile t-1); issue the
//                 copies of tile t+2 into stage (t+2)%3 == (t-1)%3, free since that barrier;
//                 compute tile t from stage t%3.
// Its loader:
//   __device__ void issue(float* sA, float* sB);  // cp.async the next K tile into a stage
//
// Loaders are called once per K tile, in order, starting with tile 0; elements outside the
// problem (rows, columns or k beyond the extents, padding taps) must land as 0.
//
// This header is included by .cu files only (CUDA C++17).
#include <cuda_runtime.h>

namespace pb::kernels::sgemm {

constexpr int kBK = 8;   // depth of one K tile
constexpr int kPad = 4;  // floats of padding at the end of every shared-memory row

template <int BM, int BN>
struct TileConfig {
  static_assert(BM == 32 || BM == 64 || BM == 128, "sgemm tile: BM must be 32, 64 or 128");
  static_assert(BN == 64 || BN == 128,
                "sgemm tile: BN must be 64 or 128 (a warp spans 64 columns)");
  static constexpr int kThreads = BM * BN / 64;  // one 8x8 register tile per thread
  // Blocks per SM the compiler must leave room for: 512 threads per SM, so at most 128 registers
  // per thread; a one-warp block (32x64, backward-weight of small layers) has so many loads per
  // thread that 128 would spill, so it gets up to 168 (12 warps per SM).
  static constexpr int kMinBlocks = kThreads >= 64 ? 512 / kThreads : 12;
  static constexpr int kWarpsN = BN / 64;     // warps side by side along n
  static constexpr int kStrideA = BM + kPad;  // row stride of sA (kBK, BM+4)
  static constexpr int kStrideB = BN + kPad;  // row stride of sB (kBK, BN+4)
  static constexpr int kStageFloats = kBK * (kStrideA + kStrideB);
  static constexpr int kSmemFloats = 2 * kStageFloats;  // mainloop: double buffer
  static constexpr int kAsyncStages = 3;
  static constexpr int kAsyncSmemFloats = kAsyncStages * kStageFloats;  // mainloop_async
  static_assert(kAsyncSmemFloats * 4 <= 48 * 1024, "static shared memory is limited to 48 KB");
};

// 4-byte global -> shared copy, asynchronous (sm_80+). When `valid` is false nothing is read
// (src must still be a mapped address: pass the tensor base) and the destination is zero-filled.
__device__ __forceinline__ void cp_async_f32(float* dst, const float* src, bool valid) {
  const unsigned dst_addr = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst_addr), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most `kPending` of this thread's most recent commit groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// blockIdx.x / threadIdx.x read afresh (volatile: never merged with an earlier read). Kernels use
// them after the main loop to recompute tile origins instead of keeping them live in registers
// across it, which would push the 128-register budget into spills.
__device__ __forceinline__ int fresh_block_x() {
  int v;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(v));
  return v;
}
__device__ __forceinline__ int fresh_block_y() {
  int v;
  asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(v));
  return v;
}
__device__ __forceinline__ int fresh_block_z() {
  int v;
  asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(v));
  return v;
}
__device__ __forceinline__ int fresh_thread_x() {
  int v;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(v));
  return v;
}

// This thread's position in the (BM/8, BN/8) grid of register tiles.
template <int BM, int BN>
__device__ __forceinline__ void thread_coords(int tid, int& ty, int& tx) {
  using Cfg = TileConfig<BM, BN>;
  const int warp = tid / 32, lane = tid % 32;
  ty = (warp / Cfg::kWarpsN) * 4 + lane / 8;  // 0 .. BM/8-1
  tx = (warp % Cfg::kWarpsN) * 8 + lane % 8;  // 0 .. BN/8-1
}

// Tile-local row of accumulator row i (0..7) and column of accumulator column 4*h (h = 0, 1).
template <int BM>
__device__ __forceinline__ int acc_row(int ty, int i) {
  return (i < 4 ? 0 : BM / 2) + ty * 4 + (i & 3);
}
template <int BN>
__device__ __forceinline__ int acc_col(int tx, int h) {
  return h * (BN / 2) + tx * 4;
}

// acc(8,8) += sA(:, this thread's rows)^T * sB(:, this thread's columns) over one K tile.
template <int BM, int BN>
__device__ __forceinline__ void tile_fma(const float* sA, const float* sB, int ty, int tx,
                                         float (&acc)[8][8]) {
  using Cfg = TileConfig<BM, BN>;
#pragma unroll
  for (int kk = 0; kk < kBK; ++kk) {
    const float* a_row = sA + kk * Cfg::kStrideA;  // (BM)
    const float* b_row = sB + kk * Cfg::kStrideB;  // (BN)
    const float4 a_lo = *reinterpret_cast<const float4*>(a_row + ty * 4);
    const float4 a_hi = *reinterpret_cast<const float4*>(a_row + BM / 2 + ty * 4);
    const float4 b_lo = *reinterpret_cast<const float4*>(b_row + tx * 4);
    const float4 b_hi = *reinterpret_cast<const float4*>(b_row + BN / 2 + tx * 4);
    const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
    const float b[8] = {b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
}

// Runs the double-buffered pipeline over num_k_tiles K tiles; acc(8,8) comes back holding this
// thread's part of the block's (BM,BN) product (zeros when num_k_tiles <= 0). Must be reached by
// every thread of the block (it contains barriers); num_k_tiles must be the same for all.
template <int BM, int BN, class Loader>
__device__ __forceinline__ void mainloop(Loader& loader, int num_k_tiles, float* smem, int ty,
                                         int tx, float (&acc)[8][8]) {
  using Cfg = TileConfig<BM, BN>;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
  }
  if (num_k_tiles <= 0) return;  // uniform across the block

  loader.load();
  loader.store(smem, smem + kBK * Cfg::kStrideA);  // stage 0
  __syncthreads();
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    float* stage = smem + (kt & 1) * Cfg::kStageFloats;
    float* next = smem + ((kt & 1) ^ 1) * Cfg::kStageFloats;
    const bool has_next = kt + 1 < num_k_tiles;
    if (has_next) loader.load();  // in flight while the FFMAs below run
    tile_fma<BM, BN>(stage, stage + kBK * Cfg::kStrideA, ty, tx, acc);
    if (has_next) loader.store(next, next + kBK * Cfg::kStrideA);
    __syncthreads();
  }
}

// The cp.async pipeline (see the top of this file); same contract as mainloop.
template <int BM, int BN, class Loader>
__device__ __forceinline__ void mainloop_async(Loader& loader, int num_k_tiles, float* smem, int ty,
                                               int tx, float (&acc)[8][8]) {
  using Cfg = TileConfig<BM, BN>;
  static_assert(Cfg::kAsyncStages == 3, "the stage rotation below assumes 3 stages");
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
  }
  if (num_k_tiles <= 0) return;  // uniform across the block

  // Prologue: tiles 0 and 1 into stages 0 and 1 (an empty group when there is no tile 1, so that
  // every iteration below can wait for "all but the newest group").
  loader.issue(smem, smem + kBK * Cfg::kStrideA);
  cp_async_commit();
  if (num_k_tiles > 1) {
    float* st = smem + Cfg::kStageFloats;
    loader.issue(st, st + kBK * Cfg::kStrideA);
  }
  cp_async_commit();

  int cur = 0;  // stage of tile kt
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    cp_async_wait<1>();  // this thread's copies of tile kt have landed
    __syncthreads();     // everyone's have; everyone is done with tile kt-1
    if (kt + 2 < num_k_tiles) {
      const int free_stage = cur == 0 ? 2 : cur - 1;  // (kt+2)%3 == (kt-1)%3
      float* st = smem + free_stage * Cfg::kStageFloats;
      loader.issue(st, st + kBK * Cfg::kStrideA);
    }
    cp_async_commit();
    const float* stage = smem + cur * Cfg::kStageFloats;
    tile_fma<BM, BN>(stage, stage + kBK * Cfg::kStrideA, ty, tx, acc);
    cur = cur == 2 ? 0 : cur + 1;
  }
  cp_async_wait<0>();  // only empty groups can remain; leave nothing in flight
}

// Calls fn(row, h, col, v) for each of this thread's 16 runs of 4 outputs: tile-local row `row`,
// tile-local columns col..col+3 (col = acc_col(tx, h)), values v = acc[i][4h..4h+3].
template <int BM, int BN, class Fn>
__device__ __forceinline__ void for_each_output(int ty, int tx, const float (&acc)[8][8], Fn&& fn) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float4 v =
          make_float4(acc[i][4 * h], acc[i][4 * h + 1], acc[i][4 * h + 2], acc[i][4 * h + 3]);
      fn(acc_row<BM>(ty, i), h, acc_col<BN>(tx, h), v);
    }
  }
}

// Two loaders fetching A and B independently.
template <class LoaderA, class LoaderB>
struct PairLoader {
  LoaderA a;
  LoaderB b;
  __device__ __forceinline__ void load() {
    a.load();
    b.load();
  }
  __device__ __forceinline__ void store(float* sA, float* sB) const {
    a.store(sA);
    b.store(sB);
  }
};

}  // namespace pb::kernels::sgemm
