// Hand-written FP32 GEMM (SGEMM) for CUDA, row-major: the device side of gemm_cpu (gemm.h).
//   C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C(M,N);  beta == 0 never reads C.
//
// Design: kernels/cuda/sgemm_tile.cuh holds the tile machinery (double-buffered shared memory,
// 8x8 register tile per thread, 4 LDS.128 per 64 FFMA). This file adds
//   - the operand loaders. Both operands are seen as "X(i,k)" with i = m for A and i = n for B,
//     stored either k-contiguous (A untransposed, B transposed) or i-contiguous (A transposed,
//     B untransposed). An i-contiguous tile is copied row by row with float4 loads and float4
//     shared stores; a k-contiguous one is read 4 k at a time per row and written transposed
//     (4 scalar shared stores, conflict-free thanks to the row padding).
//   - 128-bit global loads when the operand's base is 16-byte aligned and its leading dimension
//     is a multiple of 4 (checked at run time, template switch kVec); a float4 is used only when
//     all 4 elements are inside the matrix, otherwise 4 guarded scalar loads. Any M, N, K works:
//     out-of-range elements are loaded as 0 and out-of-range outputs are not stored.
//   - two block tiles: 128x128 (256 threads) when the problem has enough tiles to fill the GPU,
//     else 64x64 (64 threads) so that small problems still spread over many SMs.
//   - a grouped launch order: blocks walk 8 tile-rows of C at a time, column by column, so that
//     the A row-panels and B column-panels in use stay in L2.
//   - an epilogue computing alpha*acc + beta*C with float4 stores where C allows.
// Pure FP32 FFMA: no tensor cores, no TF32. FLOPs: 2*M*N*K.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/sgemm_tile.cuh"
#include "kernels/gemm.h"

namespace pb::kernels {
namespace {

using sgemm::kBK;
using sgemm::kPad;

struct GemmArgs {
  int M, N, K;
  float alpha, beta;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  bool vec_c;  // C is 16-byte aligned and ldc % 4 == 0
};

// One (I,kBK) tile of a k-contiguous operand X(i,k) = X[i*ld + k], i in [i0, i0+I), staged into
// shared memory as s[k][i] (row stride I + kPad). Each thread loads groups of 4 consecutive k of
// one row: group g (g = tid + q*T) is row g/2, k offset 4*(g%2).
template <int I, int T, bool kVec>
struct KContigTile {
  static constexpr int kGroups = 2 * I / T;  // (I*kBK/4 float4 groups) / T threads
  static_assert(kGroups >= 1 && (2 * I) % T == 0, "KContigTile: tile too small for the block");
  static constexpr int kStride = I + kPad;

  const float* ptr[kGroups];  // X(row, k0 + kq), row clamped into the matrix; advances by kBK
  bool row_ok[kGroups];
  float4 r[kGroups];
  int k_room;  // K - (k0 + kq): how many of this thread's 4 k are inside the matrix (if < 4)
  int s_off;   // kq * kStride + first row: where r[0].x goes in the stage

  __device__ __forceinline__ void init(const float* X, int64_t ld, int i0, int i_ext, int k_ext,
                                       int tid) {
    const int kq = (tid & 1) * 4;
    k_room = k_ext - kq;
    s_off = kq * kStride + (tid >> 1);
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
      const int row = i0 + (tid >> 1) + q * (T / 2);
      row_ok[q] = row < i_ext;
      ptr[q] = X + static_cast<int64_t>(row_ok[q] ? row : 0) * ld + kq;
    }
  }

  __device__ __forceinline__ void load() {
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (row_ok[q]) {
        const float* p = ptr[q];
        if (kVec && k_room > 3) {
          v = __ldg(reinterpret_cast<const float4*>(p));  // 16-byte aligned: see gemm_cuda
        } else {
          if (k_room > 0) v.x = __ldg(p);
          if (k_room > 1) v.y = __ldg(p + 1);
          if (k_room > 2) v.z = __ldg(p + 2);
          if (k_room > 3) v.w = __ldg(p + 3);
        }
      }
      r[q] = v;
      ptr[q] += kBK;
    }
    k_room -= kBK;
  }

  __device__ __forceinline__ void store(float* s) const {  // s: (kBK, I + kPad)
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
      float* col = s + s_off + q * (T / 2);
      col[0 * kStride] = r[q].x;
      col[1 * kStride] = r[q].y;
      col[2 * kStride] = r[q].z;
      col[3 * kStride] = r[q].w;
    }
  }
};

// One (I,kBK) tile of an i-contiguous operand X(i,k) = X[k*ld + i], staged as s[k][i]. A row of
// the tile (one k) is I/4 float4s; T threads cover T/(I/4) rows per pass.
template <int I, int T, bool kVec>
struct IContigTile {
  static constexpr int kThreadsPerRow = I / 4;
  static constexpr int kRowsPerPass = T / kThreadsPerRow;
  static_assert(T % kThreadsPerRow == 0 && kBK % kRowsPerPass == 0,
                "IContigTile: tile and block sizes do not fit");
  static constexpr int kGroups = kBK / kRowsPerPass;
  static constexpr int kStride = I + kPad;

  const float* ptr;  // X(i0 + i_local, k0 + k_local); advances by kBK rows
  int64_t ld;
  float4 r[kGroups];
  int k_room;  // K - (k0 + k_local)
  int n_cols;  // I_ext - (i0 + i_local): how many of this thread's 4 columns exist (if < 4)
  int s_off;   // k_local * kStride + i_local

  __device__ __forceinline__ void init(const float* X, int64_t ld_, int i0, int i_ext, int k_ext,
                                       int tid) {
    const int i_local = (tid % kThreadsPerRow) * 4;
    const int k_local = tid / kThreadsPerRow;
    ld = ld_;
    k_room = k_ext - k_local;
    n_cols = i_ext - (i0 + i_local);
    s_off = k_local * kStride + i_local;
    ptr = X + static_cast<int64_t>(k_local) * ld + i0 + i_local;  // read only when in range
  }

  __device__ __forceinline__ void load() {
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (q * kRowsPerPass < k_room) {
        const float* p = ptr + q * kRowsPerPass * ld;
        if (kVec && n_cols > 3) {
          v = __ldg(reinterpret_cast<const float4*>(p));  // 16-byte aligned: see gemm_cuda
        } else {
          if (n_cols > 0) v.x = __ldg(p);
          if (n_cols > 1) v.y = __ldg(p + 1);
          if (n_cols > 2) v.z = __ldg(p + 2);
          if (n_cols > 3) v.w = __ldg(p + 3);
        }
      }
      r[q] = v;
    }
    ptr += kBK * ld;
    k_room -= kBK;
  }

  __device__ __forceinline__ void store(float* s) const {  // s: (kBK, I + kPad)
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
      *reinterpret_cast<float4*>(s + s_off + q * kRowsPerPass * kStride) = r[q];
    }
  }
};

// A as X(m,k): untransposed A (M,K) is k-contiguous, transposed A (K,M) is m-contiguous.
// B as X(n,k): untransposed B (K,N) is n-contiguous, transposed B (N,K) is k-contiguous.
template <int I, int T, bool kKContig, bool kVec>
using OperandTile =
    typename std::conditional<kKContig, KContigTile<I, T, kVec>, IContigTile<I, T, kVec>>::type;

// C(M,N) tile (BM,BN) per block; 1-D grid in grouped order (kGroupM tile-rows at a time).
template <int BM, int BN, bool kTransA, bool kTransB, bool kVec>
__global__ void __launch_bounds__(sgemm::TileConfig<BM, BN>::kThreads,
                                  sgemm::TileConfig<BM, BN>::kMinBlocks)
    sgemm_tiled(const GemmArgs args) {
  using Cfg = sgemm::TileConfig<BM, BN>;
  constexpr int T = Cfg::kThreads;
  constexpr int kGroupM = 8;
  __shared__ __align__(16) float smem[Cfg::kSmemFloats];  // 2 x [(kBK,BM+4) A | (kBK,BN+4) B]

  const int tiles_m = (args.M + BM - 1) / BM;
  const int tiles_n = (args.N + BN - 1) / BN;
  const int pid = static_cast<int>(blockIdx.x);
  const int group = pid / (kGroupM * tiles_n);
  const int first_m = group * kGroupM;
  const int group_rows = min(tiles_m - first_m, kGroupM);
  const int in_group = pid - group * kGroupM * tiles_n;
  const int m0 = (first_m + in_group % group_rows) * BM;
  const int n0 = (in_group / group_rows) * BN;

  const int tid = static_cast<int>(threadIdx.x);
  sgemm::PairLoader<OperandTile<BM, T, !kTransA, kVec>, OperandTile<BN, T, kTransB, kVec>> loader;
  loader.a.init(args.A, args.lda, m0, args.M, args.K, tid);
  loader.b.init(args.B, args.ldb, n0, args.N, args.K, tid);

  int ty, tx;
  sgemm::thread_coords<BM, BN>(tid, ty, tx);
  float acc[8][8];
  sgemm::mainloop<BM, BN>(loader, (args.K + kBK - 1) / kBK, smem, ty, tx, acc);

  // C = alpha * acc + beta * C, beta == 0 without reading C.
  const float alpha = args.alpha, beta = args.beta;
  const int M = args.M, N = args.N;
  float* const C = args.C;
  const int64_t ldc = args.ldc;
  const bool vec_c = args.vec_c;
  sgemm::for_each_output<BM, BN>(ty, tx, acc, [&](int r, int, int c, float4 v) {
    const int row = m0 + r, col = n0 + c;
    if (row >= M || col >= N) return;
    float* out = C + static_cast<int64_t>(row) * ldc + col;
    v.x *= alpha;
    v.y *= alpha;
    v.z *= alpha;
    v.w *= alpha;
    if (vec_c && col + 3 < N) {
      if (beta != 0.0f) {
        const float4 old = *reinterpret_cast<const float4*>(out);
        v.x = fmaf(beta, old.x, v.x);
        v.y = fmaf(beta, old.y, v.y);
        v.z = fmaf(beta, old.z, v.z);
        v.w = fmaf(beta, old.w, v.w);
      }
      *reinterpret_cast<float4*>(out) = v;
    } else {
      const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (col + j < N) out[j] = beta != 0.0f ? fmaf(beta, out[j], vals[j]) : vals[j];
      }
    }
  });
}

// (M,N) C = beta * C (beta == 0 writes zeros without reading C): the K == 0 / alpha == 0 case.
__global__ void scale_matrix_kernel(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  const int64_t total = M * N;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float* c = C + (e / N) * ldc + e % N;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

void check_shape(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                 int64_t ldc) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument("gemm_cuda: " + what + " (M=" + std::to_string(M) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                                " ldc=" + std::to_string(ldc) + ")");
  };
  if (M < 0 || N < 0 || K < 0) fail("negative dimension");
  const int64_t a_cols = ta == Trans::No ? K : M;
  const int64_t b_cols = tb == Trans::No ? N : K;
  if (lda < a_cols) fail("lda is smaller than a row of A");
  if (ldb < b_cols) fail("ldb is smaller than a row of B");
  if (ldc < N) fail("ldc is smaller than a row of C");
  // Tile coordinates are 32-bit (offsets are 64-bit): leave headroom for the last tile.
  constexpr int64_t kMaxDim = std::numeric_limits<int>::max() - 256;
  if (M > kMaxDim || N > kMaxDim || K > kMaxDim) fail("a dimension exceeds the 32-bit range");
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <int BM, int BN, bool kTransA, bool kTransB, bool kVec>
void launch(const GemmArgs& args, cudaStream_t stream) {
  using Cfg = sgemm::TileConfig<BM, BN>;
  const int64_t tiles = ((args.M + int64_t{BM} - 1) / BM) * ((args.N + int64_t{BN} - 1) / BN);
  if (tiles > std::numeric_limits<int>::max()) {
    throw std::invalid_argument("gemm_cuda: too many output tiles (M=" + std::to_string(args.M) +
                                " N=" + std::to_string(args.N) + ")");
  }
  sgemm_tiled<BM, BN, kTransA, kTransB, kVec>
      <<<static_cast<unsigned>(tiles), Cfg::kThreads, 0, stream>>>(args);
  PB_CUDA_LAUNCH_CHECK();
}

template <int BM, int BN>
void dispatch(bool ta, bool tb, bool vec, const GemmArgs& args, cudaStream_t stream) {
  if (vec) {
    if (!ta && !tb) {
      launch<BM, BN, false, false, true>(args, stream);
    } else if (!ta && tb) {
      launch<BM, BN, false, true, true>(args, stream);
    } else if (ta && !tb) {
      launch<BM, BN, true, false, true>(args, stream);
    } else {
      launch<BM, BN, true, true, true>(args, stream);
    }
  } else {
    if (!ta && !tb) {
      launch<BM, BN, false, false, false>(args, stream);
    } else if (!ta && tb) {
      launch<BM, BN, false, true, false>(args, stream);
    } else if (ta && !tb) {
      launch<BM, BN, true, false, false>(args, stream);
    } else {
      launch<BM, BN, true, true, false>(args, stream);
    }
  }
}

// Below this many 128x128 tiles the 64x64 tile is used: a 128x128 grid would leave most of a
// 100+ SM GPU idle.
constexpr int64_t kMinLargeTiles = 128;

}  // namespace

void gemm_cuda(cudaStream_t stream, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K,
               float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
               float* C, int64_t ldc) {
  check_shape(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {  // C = beta * C; A and B are not read (BLAS semantics)
    if (beta == 1.0f) return;
    const int64_t blocks = std::min<int64_t>((M * N + 255) / 256, 4096);
    scale_matrix_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(M, N, beta, C, ldc);
    PB_CUDA_LAUNCH_CHECK();
    return;
  }
  GemmArgs args;
  args.M = static_cast<int>(M);
  args.N = static_cast<int>(N);
  args.K = static_cast<int>(K);
  args.alpha = alpha;
  args.beta = beta;
  args.A = A;
  args.lda = lda;
  args.B = B;
  args.ldb = ldb;
  args.C = C;
  args.ldc = ldc;
  args.vec_c = aligned16(C) && ldc % 4 == 0;
  // float4 loads need every row (or column) start 16-byte aligned: base aligned, ld % 4 == 0.
  const bool vec = aligned16(A) && lda % 4 == 0 && aligned16(B) && ldb % 4 == 0;
  const bool ta_yes = ta == Trans::Yes, tb_yes = tb == Trans::Yes;
  const int64_t large_tiles = ((M + 127) / 128) * ((N + 127) / 128);
  if (large_tiles >= kMinLargeTiles) {
    dispatch<128, 128>(ta_yes, tb_yes, vec, args, stream);
  } else {
    dispatch<64, 64>(ta_yes, tb_yes, vec, args, stream);
  }
}

}  // namespace pb::kernels
