// 2-D convolution on CUDA (float) as implicit GEMM: the device side of conv2d_*_cpu (conv2d.h).
// No im2col buffer is materialised: each block gathers its GEMM operand tiles straight from the
// NCHW tensors (zeros in the padding) into the shared-memory stages of the FP32 tile core in
// kernels/cuda/sgemm_tile.cuh (double buffer, 8x8 register tile per thread, pure FFMA).
//
// The three passes, as GEMMs C(M,N) = sum over the reduction of A(m,.) B(.,n):
//   forward          y(k, npq)   M = K, N = N*P*Q, reduction over taps (r,s) x channels c
//                    A = w[k][c][r][s]; B = x[n][c][p*sh-ph+r][q*sw-pw+s] (0 outside)
//   backward-data    dx(c, nhw)  M = C, N = N*H*W, reduction over taps x filters k
//                    A = w[k][c][r][s]; B = dy[n][k][p][q] with h = p*sh-ph+r, w = q*sw-pw+s
//   backward-weight  dw(k, c) for one tap (r,s) per grid row, M = K, N = C, reduction over npq
//                    A = dy[n][k][p][q]; B = x[n][c][p*sh-ph+r][q*sw-pw+s]
//
// Reduction order. Forward and backward-data reduce tap by tap, 8 channels (8 filters) per K
// tile: every tile is one tap, so the padding test and the gather address of a column are
// computed once per tile and each element costs one multiply-add and one compare. The channel
// count is rounded up to a multiple of 8 per tap (zeros), which wastes work only when C (or K)
// is not a multiple of 8 (the RGB stem: 3 -> 8).
//
// Strided backward-data. Only the taps r = (h + pad_h) mod stride_h (+ multiples of the stride)
// reach input row h. The kernel therefore splits dx into stride_h x stride_w phases (grid z),
// input pixels (a + sh*i, b + sw*j); within a phase the gather is a plain stride-1 correlation
// over its own taps, so no work is spent on the zeros a naive transposed convolution would
// multiply (3/4 of it at stride 2). A phase no tap reaches (stride > filter) is written as 0.
//
// Backward-weight reduces over N*P*Q, long next to the small (K, C*R*S) output, so it is split
// into `splits` chunks of N*P*Q (grid z) whose partial dw go to a caller-provided workspace
// (splits, K, C*R*S) and are summed in a fixed order by a second kernel: deterministic, bit for
// bit from run to run. The split count depends only on the shape (it targets about 65536
// threads, one full wave of 128-register threads on an H100/H200), so the result does too.
// dbias is a separate deterministic block reduction per filter.
//
// Tiles: the channel side of each GEMM uses 32, 64 or 128 rows (the smallest that holds the
// channel count), the pixel side 128 columns; backward-weight uses 64 or 128 columns of input
// channels. Index arithmetic is 32-bit: every tensor must hold fewer than 2^31 elements (checked).
// FLOPs of each pass: 2*N*K*P*Q*C*R*S.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/conv2d.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/sgemm_tile.cuh"

namespace pb::kernels {
namespace {

using sgemm::kBK;

// Conv2dShape in 32-bit, with the products the kernels use.
struct ConvDims {
  int N, C, H, W, K, R, S, P, Q;
  int sh, sw, ph, pw;
  int HW, PQ, RS, CHW, KPQ, CRS;
  int step_n, step_p, step_q;  // kBK = (step_n*P + step_p)*Q + step_q: one K tile of N*P*Q
};

// Operand-tile mappings onto the threads of a block, for a stage s[k][i] of (kBK, I):
//
// ColumnMap: a thread owns kCols whole columns i and kNk consecutive k rows from kbase. Used when
// memory runs along i (output pixels, input pixels, channels of a 1x1 filter): a warp reads 32
// neighbouring columns at one k, and writes 32 consecutive floats of one stage row.
template <int I, int T>
struct ColumnMap {
  static constexpr int kCols = I > T ? I / T : 1;
  static constexpr int kNk = kBK * I / (T * kCols);
  static_assert(kCols * kNk * T == I * kBK && kNk >= 1, "ColumnMap: tile does not fit the block");
  __device__ static __forceinline__ int col(int tid, int q) {
    return (I > T ? tid : tid % I) + q * T;
  }
  __device__ static __forceinline__ int kbase(int tid) { return I > T ? 0 : (tid / I) * kNk; }
};

// RowMap: a thread owns one k row kk = tid % 8 and kElems columns tid/8 + j*kStep. Used when
// memory runs along k (the N*P*Q reduction of backward-weight): a warp reads 8 neighbouring k for
// 4 columns. Its stage stores hit 32 distinct banks (row stride = 4 banks mod 32).
template <int I, int T>
struct RowMap {
  static constexpr int kElems = kBK * I / T;
  static constexpr int kStep = T / kBK;
  static_assert(kElems >= 1 && kElems * T == kBK * I, "RowMap: tile does not fit the block");
  __device__ static __forceinline__ int kk(int tid) { return tid % kBK; }
  __device__ static __forceinline__ int col(int tid, int j) { return tid / kBK + j * kStep; }
};

// Writes a thread's outputs: out[col_off[h][j] + row * row_stride] = acc (+ bias[row]) for rows
// m0 + acc_row < m_ext and col_off >= 0 (-1 marks a column outside the problem). A run of 4
// consecutive, 16-byte-aligned offsets is written with one float4 store.
template <int BM, int BN>
__device__ __forceinline__ void store_tile(float* out, bool out_aligned16, int m0, int m_ext,
                                           int row_stride, const int (&col_off)[2][4],
                                           const float* bias, int ty, int tx,
                                           const float (&acc)[8][8]) {
  bool vec[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    vec[h] = out_aligned16 && row_stride % 4 == 0 && col_off[h][0] >= 0 && col_off[h][0] % 4 == 0 &&
             col_off[h][1] == col_off[h][0] + 1 && col_off[h][2] == col_off[h][0] + 2 &&
             col_off[h][3] == col_off[h][0] + 3;
  }
  sgemm::for_each_output<BM, BN>(ty, tx, acc, [&](int r, int h, int, float4 v) {
    const int row = m0 + r;
    if (row >= m_ext) return;
    if (bias != nullptr) {
      const float b = __ldg(bias + row);
      v.x += b;
      v.y += b;
      v.z += b;
      v.w += b;
    }
    float* o = out + static_cast<int64_t>(row) * row_stride;
    if (vec[h]) {
      *reinterpret_cast<float4*>(o + col_off[h][0]) = v;
    } else {
      if (col_off[h][0] >= 0) o[col_off[h][0]] = v.x;
      if (col_off[h][1] >= 0) o[col_off[h][1]] = v.y;
      if (col_off[h][2] >= 0) o[col_off[h][2]] = v.z;
      if (col_off[h][3] >= 0) o[col_off[h][3]] = v.w;
    }
  });
}

// ---- forward ------------------------------------------------------------------------------------

// K tile t = (tap (r,s), channels c0..c0+7), t = (r*S + s)*ceil(C/8) + c0/8.
//   A (BM,kBK): w[k][c][r][s], RowMap (kk = channel offset)
//   B (kBK,BN): x[n][c][p*sh-ph+r][q*sw-pw+s] for output pixel npq = (n,p,q), ColumnMap
template <int BM, int BN>
struct FpropLoader {
  static constexpr int T = sgemm::TileConfig<BM, BN>::kThreads;
  using AMap = RowMap<BM, T>;
  using BMap = ColumnMap<BN, T>;
  static constexpr int kSA = BM + sgemm::kPad, kSB = BN + sgemm::kPad;

  const ConvDims* d;
  const float* w;
  const float* x;
  int a_row0, b_kbase;
  int b_img[BMap::kCols];  // n*C*H*W of the column's image, -1 outside N*P*Q
  int b_h0[BMap::kCols];   // p*sh - ph
  int b_w0[BMap::kCols];   // q*sw - pw
  int c0, r, s;            // the next tile to issue

  __device__ __forceinline__ void init(const ConvDims* dims, const float* w_, const float* x_,
                                       int m0, int n0, int tid) {
    d = dims;
    w = w_;
    x = x_;
    a_row0 = m0 + tid / kBK;
    b_kbase = BMap::kbase(tid);
    const int npq_total = d->N * d->PQ;
#pragma unroll
    for (int q = 0; q < BMap::kCols; ++q) {
      const int npq = n0 + BMap::col(tid, q);
      b_img[q] = -1;
      b_h0[q] = 0;
      b_w0[q] = 0;
      if (npq < npq_total) {
        const int n = npq / d->PQ, pq = npq - n * d->PQ;
        const int p = pq / d->Q, qq = pq - p * d->Q;
        b_img[q] = n * d->CHW;
        b_h0[q] = p * d->sh - d->ph;
        b_w0[q] = qq * d->sw - d->pw;
      }
    }
    c0 = 0;
    r = 0;
    s = 0;
  }

  __device__ __forceinline__ void issue(float* sA, float* sB) {
    const int tid = static_cast<int>(threadIdx.x);
    const int tap = r * d->S + s;
    const int kk = AMap::kk(tid), ca = c0 + kk;
#pragma unroll
    for (int j = 0; j < AMap::kElems; ++j) {
      const int k = a_row0 + j * AMap::kStep;
      const bool ok = k < d->K && ca < d->C;
      sgemm::cp_async_f32(sA + kk * kSA + AMap::col(tid, j),
                          w + (ok ? k * d->CRS + ca * d->RS + tap : 0), ok);
    }
#pragma unroll
    for (int q = 0; q < BMap::kCols; ++q) {
      const int h = b_h0[q] + r, wc = b_w0[q] + s;
      const bool in = b_img[q] >= 0 && static_cast<unsigned>(h) < static_cast<unsigned>(d->H) &&
                      static_cast<unsigned>(wc) < static_cast<unsigned>(d->W);
      const int pix = in ? b_img[q] + h * d->W + wc : 0;  // x[n][0][h][w]
#pragma unroll
      for (int jj = 0; jj < BMap::kNk; ++jj) {
        const int c = c0 + b_kbase + jj;
        const bool ok = in && c < d->C;
        sgemm::cp_async_f32(sB + (b_kbase + jj) * kSB + BMap::col(tid, q),
                            x + (ok ? pix + c * d->HW : 0), ok);
      }
    }
    c0 += kBK;
    if (c0 >= d->C) {
      c0 = 0;
      if (++s == d->S) {
        s = 0;
        ++r;
      }
    }
  }
};

// y(N,K,P,Q) = conv(x, w) + bias: block tile (BM filters, BN output pixels); grid.x = tiles, the
// filter tile fastest so that neighbouring blocks share the gathered x tile in L2.
template <int BM, int BN>
__global__ void __launch_bounds__(sgemm::TileConfig<BM, BN>::kThreads,
                                  sgemm::TileConfig<BM, BN>::kMinBlocks)
    conv2d_fprop_implicit_gemm(const __grid_constant__ ConvDims d, const float* __restrict__ x,
                               const float* __restrict__ w, const float* __restrict__ bias,
                               float* __restrict__ y, bool y_aligned16) {
  __shared__ __align__(16) float smem[sgemm::TileConfig<BM, BN>::kAsyncSmemFloats];
  const int tiles_m = (d.K + BM - 1) / BM;
  int ty, tx;
  float acc[8][8];
  {
    const int m0 = (static_cast<int>(blockIdx.x) % tiles_m) * BM;
    const int n0 = (static_cast<int>(blockIdx.x) / tiles_m) * BN;
    const int tid = static_cast<int>(threadIdx.x);
    FpropLoader<BM, BN> loader;
    loader.init(&d, w, x, m0, n0, tid);
    sgemm::thread_coords<BM, BN>(tid, ty, tx);
    sgemm::mainloop_async<BM, BN>(loader, d.RS * ((d.C + kBK - 1) / kBK), smem, ty, tx, acc);
  }
  // Tile origin and thread coordinates recomputed rather than kept live (registers).
  const int bid = sgemm::fresh_block_x();
  const int m0 = (bid % tiles_m) * BM;
  const int n0 = (bid / tiles_m) * BN;
  sgemm::thread_coords<BM, BN>(sgemm::fresh_thread_x(), ty, tx);

  // Column npq = (n, pq) of y(K, N*P*Q) lives at n*K*P*Q + pq (+ k*P*Q per row).
  int col_off[2][4];
  const int npq_total = d.N * d.PQ;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int npq = n0 + sgemm::acc_col<BN>(tx, h) + j;
      const int n = npq / d.PQ;
      col_off[h][j] = npq < npq_total ? n * d.KPQ + (npq - n * d.PQ) : -1;
    }
  }
  store_tile<BM, BN>(y, y_aligned16, m0, d.K, d.PQ, col_off, bias, ty, tx, acc);
}

// ---- backward-data ------------------------------------------------------------------------------

// Per phase (a, b) (input pixels h = a + sh*i, w = b + sw*j): the taps r = r0 + sh*u (u < Ru),
// s = s0 + sw*v (v < Sv) reach those pixels, from output pixel p = i + da - u, q = j + db - v.
struct DgradPhase {
  int a, b, Ha, Wb, r0, s0, Ru, Sv, da, db;
};

__device__ __forceinline__ DgradPhase dgrad_phase(const ConvDims& d, int z) {
  DgradPhase ph;
  ph.a = z / d.sw;
  ph.b = z - ph.a * d.sw;
  ph.Ha = ph.a < d.H ? (d.H - ph.a + d.sh - 1) / d.sh : 0;
  ph.Wb = ph.b < d.W ? (d.W - ph.b + d.sw - 1) / d.sw : 0;
  ph.r0 = (ph.a + d.ph) % d.sh;
  ph.s0 = (ph.b + d.pw) % d.sw;
  ph.Ru = ph.r0 < d.R ? (d.R - ph.r0 + d.sh - 1) / d.sh : 0;
  ph.Sv = ph.s0 < d.S ? (d.S - ph.s0 + d.sw - 1) / d.sw : 0;
  ph.da = (ph.a + d.ph) / d.sh;
  ph.db = (ph.b + d.pw) / d.sw;
  return ph;
}

// K tile t = (tap (u,v), filters k0..k0+7), t = (u*Sv + v)*ceil(K/8) + k0/8.
//   A (BM,kBK): w[k][c][r][s] for input channel c (columns of the stage), ColumnMap
//   B (kBK,BN): dy[n][k][i+da-u][j+db-v] for input pixel (n,i,j) of the phase, ColumnMap
template <int BM, int BN>
struct DgradLoader {
  static constexpr int T = sgemm::TileConfig<BM, BN>::kThreads;
  using AMap = ColumnMap<BM, T>;
  using BMap = ColumnMap<BN, T>;
  static constexpr int kSA = BM + sgemm::kPad, kSB = BN + sgemm::kPad;

  const ConvDims* d;
  const float* w;
  const float* dy;
  int r0, s0, Sv, a_kbase, b_kbase;
  int a_coff[AMap::kCols];  // c*R*S, -1 outside C
  int b_img[BMap::kCols];   // n*K*P*Q, -1 outside the phase's pixels
  int b_pi[BMap::kCols];    // i + da
  int b_qj[BMap::kCols];    // j + db
  int k0, u, v;             // the next tile to issue

  __device__ __forceinline__ void init(const ConvDims* dims, const DgradPhase& ph, const float* w_,
                                       const float* dy_, int m0, int n0, int tid) {
    d = dims;
    w = w_;
    dy = dy_;
    r0 = ph.r0;
    s0 = ph.s0;
    Sv = ph.Sv;
    a_kbase = AMap::kbase(tid);
    b_kbase = BMap::kbase(tid);
#pragma unroll
    for (int q = 0; q < AMap::kCols; ++q) {
      const int c = m0 + AMap::col(tid, q);
      a_coff[q] = c < d->C ? c * d->RS : -1;
    }
    const int pix = ph.Ha * ph.Wb, cols = d->N * pix;
#pragma unroll
    for (int q = 0; q < BMap::kCols; ++q) {
      const int col = n0 + BMap::col(tid, q);
      b_img[q] = -1;
      b_pi[q] = 0;
      b_qj[q] = 0;
      if (col < cols) {
        const int n = col / pix, rem = col - n * pix;
        const int i = rem / ph.Wb, j = rem - i * ph.Wb;
        b_img[q] = n * d->KPQ;
        b_pi[q] = i + ph.da;
        b_qj[q] = j + ph.db;
      }
    }
    k0 = 0;
    u = 0;
    v = 0;
  }

  __device__ __forceinline__ void issue(float* sA, float* sB) {
    const int tid = static_cast<int>(threadIdx.x);
    const int tap = (r0 + d->sh * u) * d->S + s0 + d->sw * v;
#pragma unroll
    for (int q = 0; q < AMap::kCols; ++q) {
#pragma unroll
      for (int jj = 0; jj < AMap::kNk; ++jj) {
        const int k = k0 + a_kbase + jj;
        const bool ok = a_coff[q] >= 0 && k < d->K;
        sgemm::cp_async_f32(sA + (a_kbase + jj) * kSA + AMap::col(tid, q),
                            w + (ok ? k * d->CRS + a_coff[q] + tap : 0), ok);
      }
    }
#pragma unroll
    for (int q = 0; q < BMap::kCols; ++q) {
      const int p = b_pi[q] - u, qq = b_qj[q] - v;
      const bool in = b_img[q] >= 0 && static_cast<unsigned>(p) < static_cast<unsigned>(d->P) &&
                      static_cast<unsigned>(qq) < static_cast<unsigned>(d->Q);
      const int pix = in ? b_img[q] + p * d->Q + qq : 0;  // dy[n][0][p][q]
#pragma unroll
      for (int jj = 0; jj < BMap::kNk; ++jj) {
        const int k = k0 + b_kbase + jj;
        const bool ok = in && k < d->K;
        sgemm::cp_async_f32(sB + (b_kbase + jj) * kSB + BMap::col(tid, q),
                            dy + (ok ? pix + k * d->PQ : 0), ok);
      }
    }
    k0 += kBK;
    if (k0 >= d->K) {
      k0 = 0;
      if (++v == Sv) {
        v = 0;
        ++u;
      }
    }
  }
};

// dx(N,C,H,W) = conv^T(dy, w): grid.z = phase (a*sw + b); grid.x = tiles of phase (0,0), the
// largest; blocks past the tiles of a smaller phase exit at once.
template <int BM, int BN>
__global__ void __launch_bounds__(sgemm::TileConfig<BM, BN>::kThreads,
                                  sgemm::TileConfig<BM, BN>::kMinBlocks)
    conv2d_dgrad_implicit_gemm(const __grid_constant__ ConvDims d, const float* __restrict__ dy,
                               const float* __restrict__ w, float* __restrict__ dx,
                               bool dx_aligned16) {
  __shared__ __align__(16) float smem[sgemm::TileConfig<BM, BN>::kAsyncSmemFloats];
  const int tiles_m = (d.C + BM - 1) / BM;
  int ty, tx;
  float acc[8][8];
  {
    const DgradPhase ph = dgrad_phase(d, static_cast<int>(blockIdx.z));
    const int tiles_n = (d.N * ph.Ha * ph.Wb + BN - 1) / BN;
    if (static_cast<int>(blockIdx.x) >= tiles_m * tiles_n) return;  // whole block, no barrier yet
    const int m0 = (static_cast<int>(blockIdx.x) % tiles_m) * BM;
    const int n0 = (static_cast<int>(blockIdx.x) / tiles_m) * BN;
    const int tid = static_cast<int>(threadIdx.x);
    DgradLoader<BM, BN> loader;
    loader.init(&d, ph, w, dy, m0, n0, tid);
    sgemm::thread_coords<BM, BN>(tid, ty, tx);
    sgemm::mainloop_async<BM, BN>(loader, ph.Ru * ph.Sv * ((d.K + kBK - 1) / kBK), smem, ty, tx,
                                  acc);
  }
  // Tile origin, phase and thread coordinates recomputed rather than kept live (registers).
  const DgradPhase ph = dgrad_phase(d, sgemm::fresh_block_z());
  const int bid = sgemm::fresh_block_x();
  const int m0 = (bid % tiles_m) * BM;
  const int n0 = (bid / tiles_m) * BN;
  sgemm::thread_coords<BM, BN>(sgemm::fresh_thread_x(), ty, tx);

  // Column (n, i, j) of the phase is dx[n][.][a + sh*i][b + sw*j].
  const int pix = ph.Ha * ph.Wb, cols = d.N * pix;
  int col_off[2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + sgemm::acc_col<BN>(tx, h) + j;
      col_off[h][j] = -1;
      if (col < cols) {
        const int n = col / pix, rem = col - n * pix;
        const int i = rem / ph.Wb, jj = rem - i * ph.Wb;
        col_off[h][j] = n * d.CHW + (ph.a + d.sh * i) * d.W + ph.b + d.sw * jj;
      }
    }
  }
  store_tile<BM, BN>(dx, dx_aligned16, m0, d.C, d.HW, col_off, nullptr, ty, tx, acc);
}

// ---- backward-weight ----------------------------------------------------------------------------

// K tile t covers reduction indices npq = begin + 8t .. begin + 8t + 7 (< end) for tap (r, s).
//   A (BM,kBK): dy[n][k][p][q], RowMap (kk = npq offset, columns = filters k)
//   B (BN,kBK): x[n][c][p*sh-ph+r][q*sw-pw+s], RowMap (columns = input channels c)
template <int BM, int BN>
struct WgradLoader {
  static constexpr int T = sgemm::TileConfig<BM, BN>::kThreads;
  using AMap = RowMap<BM, T>;
  using BMap = RowMap<BN, T>;
  static constexpr int kSA = BM + sgemm::kPad, kSB = BN + sgemm::kPad;

  const ConvDims* d;
  const float* dy;
  const float* x;
  int hr, ws, a_row0, b_col0;  // hr = r - pad_h, ws = s - pad_w
  int left;                    // end - npq: reduction indices left to this thread's column
  int n, p, q;                 // this thread's next reduction index npq = (n*P + p)*Q + q

  __device__ __forceinline__ void init(const ConvDims* dims, const float* dy_, const float* x_,
                                       int r_, int s_, int m0, int n0, int begin, int end_,
                                       int tid) {
    d = dims;
    dy = dy_;
    x = x_;
    hr = r_ - d->ph;
    ws = s_ - d->pw;
    a_row0 = m0 + tid / kBK;
    b_col0 = n0 + tid / kBK;
    const int npq = begin + AMap::kk(tid);
    left = end_ - npq;
    n = npq / d->PQ;
    const int pq = npq - n * d->PQ;
    p = pq / d->Q;
    q = pq - p * d->Q;
  }

  __device__ __forceinline__ void issue(float* sA, float* sB) {
    const int tid = static_cast<int>(threadIdx.x);
    const int kk = AMap::kk(tid);
    const bool valid = left > 0;
    const int dy_pix = valid ? n * d->KPQ + p * d->Q + q : 0;  // dy[n][0][p][q]
#pragma unroll
    for (int j = 0; j < AMap::kElems; ++j) {
      const int k = a_row0 + j * AMap::kStep;
      const bool ok = valid && k < d->K;
      sgemm::cp_async_f32(sA + kk * kSA + AMap::col(tid, j), dy + (ok ? dy_pix + k * d->PQ : 0),
                          ok);
    }
    const int h = p * d->sh + hr, wc = q * d->sw + ws;
    const bool in = valid && static_cast<unsigned>(h) < static_cast<unsigned>(d->H) &&
                    static_cast<unsigned>(wc) < static_cast<unsigned>(d->W);
    const int x_pix = in ? n * d->CHW + h * d->W + wc : 0;  // x[n][0][h][w]
#pragma unroll
    for (int j = 0; j < BMap::kElems; ++j) {
      const int c = b_col0 + j * BMap::kStep;
      const bool ok = in && c < d->C;
      sgemm::cp_async_f32(sB + kk * kSB + BMap::col(tid, j), x + (ok ? x_pix + c * d->HW : 0), ok);
    }
    // npq += kBK in mixed radix (N, P, Q); step_q < Q and step_p < P, so one carry each.
    left -= kBK;
    q += d->step_q;
    const bool carry_q = q >= d->Q;
    q -= carry_q ? d->Q : 0;
    p += d->step_p + (carry_q ? 1 : 0);
    const bool carry_p = p >= d->P;
    p -= carry_p ? d->P : 0;
    n += d->step_n + (carry_p ? 1 : 0);
  }
};

// out(splits, K, C*R*S): grid.x = (K, C) tiles, grid.y = tap r*S + s, grid.z = split of N*P*Q
// (chunk indices each). Split z writes its partial dw to out + z*K*C*R*S.
template <int BM, int BN>
__global__ void __launch_bounds__(sgemm::TileConfig<BM, BN>::kThreads,
                                  sgemm::TileConfig<BM, BN>::kMinBlocks)
    conv2d_wgrad_implicit_gemm(const __grid_constant__ ConvDims d, const float* __restrict__ x,
                               const float* __restrict__ dy, float* __restrict__ out, int chunk,
                               bool out_aligned16) {
  __shared__ __align__(16) float smem[sgemm::TileConfig<BM, BN>::kAsyncSmemFloats];
  const int tiles_m = (d.K + BM - 1) / BM;
  int ty, tx;
  float acc[8][8];
  {
    const int m0 = (static_cast<int>(blockIdx.x) % tiles_m) * BM;
    const int n0 = (static_cast<int>(blockIdx.x) / tiles_m) * BN;
    const int tap = static_cast<int>(blockIdx.y);
    const int r = tap / d.S, s = tap - r * d.S;
    const int begin = static_cast<int>(blockIdx.z) * chunk;
    const int end = min(d.N * d.PQ, begin + chunk);
    const int tid = static_cast<int>(threadIdx.x);
    WgradLoader<BM, BN> loader;
    loader.init(&d, dy, x, r, s, m0, n0, begin, end, tid);
    sgemm::thread_coords<BM, BN>(tid, ty, tx);
    const int num_k_tiles = end > begin ? (end - begin + kBK - 1) / kBK : 0;
    sgemm::mainloop_async<BM, BN>(loader, num_k_tiles, smem, ty, tx, acc);
  }
  // Tile origin, tap, split and thread coordinates recomputed rather than kept live (registers).
  const int bid = sgemm::fresh_block_x();
  const int m0 = (bid % tiles_m) * BM;
  const int n0 = (bid / tiles_m) * BN;
  const int tap = sgemm::fresh_block_y();
  const int split = sgemm::fresh_block_z();
  sgemm::thread_coords<BM, BN>(sgemm::fresh_thread_x(), ty, tx);

  // Column c of this tap's dw(K, C) is dw[.][c][r][s].
  int col_off[2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = n0 + sgemm::acc_col<BN>(tx, h) + j;
      col_off[h][j] = c < d.C ? c * d.RS + tap : -1;
    }
  }
  float* split_out = out + static_cast<int64_t>(split) * d.K * d.CRS;
  store_tile<BM, BN>(split_out, out_aligned16, m0, d.K, d.CRS, col_off, nullptr, ty, tx, acc);
}

// dw(n) = sum over s < splits of ws(splits, n), in order s = 0, 1, ...: deterministic.
__global__ void split_sum_kernel(int64_t n, int splits, const float* __restrict__ ws,
                                 float* __restrict__ dw) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += ws[s * n + i];
    dw[i] = sum;
  }
}

constexpr int kBiasThreads = 256;

// dbias(K): block k sums dy[n][k][.] over n and the P*Q pixels; fixed-order tree reduction.
__global__ void bias_grad_kernel(int N, int K, int PQ, const float* __restrict__ dy,
                                 float* __restrict__ dbias) {
  __shared__ float partial[kBiasThreads];
  const int k = static_cast<int>(blockIdx.x);
  const int total = N * PQ;
  float sum = 0.0f;
  for (int e = static_cast<int>(threadIdx.x); e < total; e += kBiasThreads) {
    const int n = e / PQ;
    sum += dy[(n * K + k) * PQ + (e - n * PQ)];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kBiasThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) dbias[k] = partial[0];
}

// ---- host side ----------------------------------------------------------------------------------

std::string dims_text(const Conv2dShape& s) {
  return " (N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " H=" + std::to_string(s.H) +
         " W=" + std::to_string(s.W) + " K=" + std::to_string(s.K) + " R=" + std::to_string(s.R) +
         " S=" + std::to_string(s.S) + " stride=" + std::to_string(s.stride_h) + "x" +
         std::to_string(s.stride_w) + " pad=" + std::to_string(s.pad_h) + "x" +
         std::to_string(s.pad_w) + ")";
}

// The CPU kernels' shape rules, plus the 32-bit index range of these kernels.
ConvDims check_and_convert(const char* who, const Conv2dShape& s) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string(who) + ": " + what + dims_text(s));
  };
  if (s.N < 0 || s.C < 1 || s.H < 1 || s.W < 1 || s.K < 1 || s.R < 1 || s.S < 1) {
    fail("dimensions must be positive (N may be 0)");
  }
  if (s.stride_h < 1 || s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0) {
    fail("strides must be >= 1 and padding >= 0");
  }
  constexpr int64_t kMax = INT_MAX;
  if (s.H > kMax / 4 || s.W > kMax / 4 || s.pad_h > kMax / 4 || s.pad_w > kMax / 4 ||
      s.stride_h > kMax / 4 || s.stride_w > kMax / 4) {
    fail("a dimension exceeds the 32-bit index range of the CUDA kernels");
  }
  if (s.H + 2 * s.pad_h < s.R || s.W + 2 * s.pad_w < s.S) {
    fail("the filter is larger than the padded input");
  }
  const int64_t P = s.P(), Q = s.Q();
  // Every tensor (and each product below) must index with int.
  const auto fits = [](int64_t a, int64_t b, int64_t c, int64_t d) {
    if (a > kMax || b > kMax || c > kMax || d > kMax) return false;
    return a * b <= kMax && a * b * c <= kMax && a * b * c * d <= kMax;  // no int64 overflow
  };
  if (!fits(std::max<int64_t>(s.N, 1), s.C, s.H, s.W) ||
      !fits(std::max<int64_t>(s.N, 1), s.K, P, Q) || !fits(s.K, s.C, s.R, s.S)) {
    fail("a tensor has 2^31 elements or more (the CUDA kernels index with 32 bits)");
  }
  if (s.R * s.S > 65535) fail("R*S exceeds 65535 (one grid row per filter tap)");
  if (s.stride_h * s.stride_w > 65535) fail("stride_h*stride_w exceeds 65535");
  ConvDims d;
  d.N = static_cast<int>(s.N);
  d.C = static_cast<int>(s.C);
  d.H = static_cast<int>(s.H);
  d.W = static_cast<int>(s.W);
  d.K = static_cast<int>(s.K);
  d.R = static_cast<int>(s.R);
  d.S = static_cast<int>(s.S);
  d.P = static_cast<int>(P);
  d.Q = static_cast<int>(Q);
  d.sh = static_cast<int>(s.stride_h);
  d.sw = static_cast<int>(s.stride_w);
  d.ph = static_cast<int>(s.pad_h);
  d.pw = static_cast<int>(s.pad_w);
  d.HW = d.H * d.W;
  d.PQ = d.P * d.Q;
  d.RS = d.R * d.S;
  d.CHW = d.C * d.HW;
  d.KPQ = d.K * d.PQ;
  d.CRS = d.C * d.RS;
  d.step_n = kBK / d.PQ;
  d.step_p = (kBK % d.PQ) / d.Q;
  d.step_q = (kBK % d.PQ) % d.Q;
  return d;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Rows of the channel side of a tile: the smallest of 32, 64, 128 holding `channels`.
int channel_tile(int64_t channels) {
  return channels <= 32 ? 32 : channels <= 64 ? 64 : 128;
}

unsigned grid_x(int64_t tiles, const char* who, const Conv2dShape& s) {
  if (tiles > INT_MAX)
    throw std::invalid_argument(std::string(who) + ": too many tiles" + dims_text(s));
  return static_cast<unsigned>(tiles);
}

template <int BM, int BN>
void launch_fprop(const ConvDims& d, const Conv2dShape& s, const float* x, const float* w,
                  const float* bias, float* y, cudaStream_t stream) {
  const int64_t tiles = ((d.K + int64_t{BM} - 1) / BM) * ((int64_t{d.N} * d.PQ + BN - 1) / BN);
  conv2d_fprop_implicit_gemm<BM, BN>
      <<<grid_x(tiles, "conv2d_forward_cuda", s), sgemm::TileConfig<BM, BN>::kThreads, 0, stream>>>(
          d, x, w, bias, y, aligned16(y));
  PB_CUDA_LAUNCH_CHECK();
}

template <int BM, int BN>
void launch_dgrad(const ConvDims& d, const Conv2dShape& s, const float* dy, const float* w,
                  float* dx, cudaStream_t stream) {
  // Phase (0,0) has the most input pixels: ceil(H/sh) x ceil(W/sw) per image.
  const int64_t pix0 = ((d.H + int64_t{d.sh} - 1) / d.sh) * ((d.W + int64_t{d.sw} - 1) / d.sw);
  const int64_t tiles = ((d.C + int64_t{BM} - 1) / BM) * ((d.N * pix0 + BN - 1) / BN);
  const dim3 grid(grid_x(tiles, "conv2d_backward_data_cuda", s), 1,
                  static_cast<unsigned>(d.sh * d.sw));
  conv2d_dgrad_implicit_gemm<BM, BN>
      <<<grid, sgemm::TileConfig<BM, BN>::kThreads, 0, stream>>>(d, dy, w, dx, aligned16(dx));
  PB_CUDA_LAUNCH_CHECK();
}

// Backward-weight launch plan: tile shape and split of the N*P*Q reduction.
struct WgradPlan {
  int bm, bn;
  int splits;     // >= 1
  int chunk;      // reduction indices per split, a multiple of kBK
  int64_t tiles;  // (K, C) tiles per tap
  int64_t workspace_bytes;
};

// Enough blocks for about this many threads in flight: 512 threads (128 registers each) on each
// of ~128 SMs, one full wave on an H100/H200. A constant rather than the device's SM count, so
// that the split, and so the rounding of dw, depends on the shape only.
constexpr int64_t kWgradTargetThreads = 65536;
constexpr int64_t kWgradMinChunk = 256;  // reduction indices per split, at least
constexpr int64_t kWgradMaxSplits = 256;

WgradPlan plan_wgrad(const ConvDims& d) {
  WgradPlan plan;
  plan.bm = channel_tile(d.K);
  plan.bn = d.C <= 64 ? 64 : 128;
  const int64_t threads = int64_t{plan.bm} * plan.bn / 64;
  plan.tiles = ((d.K + int64_t{plan.bm} - 1) / plan.bm) * ((d.C + int64_t{plan.bn} - 1) / plan.bn);
  const int64_t blocks_per_split = plan.tiles * d.RS;
  const int64_t npq = int64_t{d.N} * d.PQ;
  int64_t splits = (kWgradTargetThreads / threads + blocks_per_split - 1) / blocks_per_split;
  splits = std::min({splits, kWgradMaxSplits, std::max<int64_t>(1, npq / kWgradMinChunk)});
  splits = std::max<int64_t>(splits, 1);
  int64_t chunk = (npq + splits - 1) / splits;
  chunk = std::max<int64_t>((chunk + kBK - 1) / kBK * kBK, kBK);
  splits = std::max<int64_t>((npq + chunk - 1) / chunk, 1);
  plan.splits = static_cast<int>(splits);
  plan.chunk = static_cast<int>(chunk);
  plan.workspace_bytes =
      plan.splits > 1 ? int64_t{plan.splits} * d.K * d.CRS * static_cast<int64_t>(sizeof(float))
                      : 0;
  return plan;
}

template <int BM, int BN>
void launch_wgrad(const ConvDims& d, const Conv2dShape& s, const WgradPlan& plan, const float* x,
                  const float* dy, float* out, cudaStream_t stream) {
  const dim3 grid(grid_x(plan.tiles, "conv2d_backward_weight_cuda", s), static_cast<unsigned>(d.RS),
                  static_cast<unsigned>(plan.splits));
  conv2d_wgrad_implicit_gemm<BM, BN><<<grid, sgemm::TileConfig<BM, BN>::kThreads, 0, stream>>>(
      d, x, dy, out, plan.chunk, aligned16(out));
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void conv2d_forward_cuda(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                         const float* bias, float* y) {
  const ConvDims d = check_and_convert("conv2d_forward_cuda", s);
  if (d.N == 0) return;
  switch (channel_tile(d.K)) {
    case 32:
      launch_fprop<32, 128>(d, s, x, w, bias, y, stream);
      break;
    case 64:
      launch_fprop<64, 128>(d, s, x, w, bias, y, stream);
      break;
    default:
      launch_fprop<128, 128>(d, s, x, w, bias, y, stream);
      break;
  }
}

void conv2d_backward_data_cuda(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                               const float* w, float* dx) {
  const ConvDims d = check_and_convert("conv2d_backward_data_cuda", s);
  if (d.N == 0) return;
  switch (channel_tile(d.C)) {
    case 32:
      launch_dgrad<32, 128>(d, s, dy, w, dx, stream);
      break;
    case 64:
      launch_dgrad<64, 128>(d, s, dy, w, dx, stream);
      break;
    default:
      launch_dgrad<128, 128>(d, s, dy, w, dx, stream);
      break;
  }
}

int64_t conv2d_backward_weight_cuda_workspace_bytes(const Conv2dShape& s) {
  return plan_wgrad(check_and_convert("conv2d_backward_weight_cuda_workspace_bytes", s))
      .workspace_bytes;
}

void conv2d_backward_weight_cuda(cudaStream_t stream, const Conv2dShape& s, const float* x,
                                 const float* dy, float* dw, float* dbias, void* workspace) {
  const ConvDims d = check_and_convert("conv2d_backward_weight_cuda", s);
  const WgradPlan plan = plan_wgrad(d);
  if (plan.workspace_bytes > 0 && workspace == nullptr) {
    throw std::invalid_argument(
        "conv2d_backward_weight_cuda: this shape needs a workspace of " +
        std::to_string(plan.workspace_bytes) +
        " bytes (conv2d_backward_weight_cuda_workspace_bytes) but none was given" + dims_text(s));
  }
  float* out = plan.splits > 1 ? static_cast<float*>(workspace) : dw;
  const int key = plan.bm * 1000 + plan.bn;
  switch (key) {
    case 32064:
      launch_wgrad<32, 64>(d, s, plan, x, dy, out, stream);
      break;
    case 32128:
      launch_wgrad<32, 128>(d, s, plan, x, dy, out, stream);
      break;
    case 64064:
      launch_wgrad<64, 64>(d, s, plan, x, dy, out, stream);
      break;
    case 64128:
      launch_wgrad<64, 128>(d, s, plan, x, dy, out, stream);
      break;
    case 128064:
      launch_wgrad<128, 64>(d, s, plan, x, dy, out, stream);
      break;
    default:
      launch_wgrad<128, 128>(d, s, plan, x, dy, out, stream);
      break;
  }
  if (plan.splits > 1) {
    const int64_t n = int64_t{d.K} * d.CRS;
    const int64_t blocks = std::min<int64_t>((n + 255) / 256, 4096);
    split_sum_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        n, plan.splits, static_cast<float*>(workspace), dw);
    PB_CUDA_LAUNCH_CHECK();
  }
  if (dbias != nullptr) {
    bias_grad_kernel<<<static_cast<unsigned>(d.K), kBiasThreads, 0, stream>>>(d.N, d.K, d.PQ, dy,
                                                                              dbias);
    PB_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace pb::kernels
