// 2-D convolution on the CPU: the dispatch of conv2d.h, and the im2col + GEMM algorithm.
//
// conv2d_*_cpu<T> take the direct path (kernels/cpu/conv2d_direct.cpp) for float stride-1 "same"
// convolutions on an AVX2 + FMA CPU, and im2col + GEMM for every other shape and for double;
// kernels/cpu/conv2d_algos.h lists which is which. dbias is summed here for both.
//
// im2col + GEMM, a chunk of images per GEMM. For image n, im2col unrolls x_n (C,H,W) into P*Q
// columns of col (C*R*S, .): row (c,r,s) holds, for every output position (p,q), the input value
// under filter tap (r,s) of channel c, or 0 in the padding:
//   col[(c*R + r)*S + s][i*P*Q + p*Q + q] = x_n[c][p*stride_h - pad_h + r][q*stride_w - pad_w + s]
// where i is n's index within its chunk of B images. With w viewed as (K, C*R*S), each pass over
// a chunk is then one GEMM whose long side is B*P*Q:
//   forward           out = w * col, y_n = out[:, i*PQ..]   (K,B*PQ) = (K,CRS) * (CRS,B*PQ)
//   backward-data     dcol = w^T * dyc, col2im -> dx_n      (CRS,B*PQ) = (CRS,K) * (K,B*PQ)
//   backward-weight   dw += dyc * col^T                     (K,CRS) = (K,B*PQ) * (B*PQ,CRS)
// where dyc (K, B*PQ) is the chunk's dy with images side by side (a layout copy of dy).
// col2im is the adjoint of im2col: it adds every entry of dcol back onto the input cell it was
// copied from, so overlapping windows (kernel larger than stride) accumulate.
//
// Why chunks: one GEMM per image is small on the 16x16 and 8x8 stages (P*Q = 256 or 64 columns)
// and OpenBLAS runs it far below its peak; one GEMM over the whole batch would need a col buffer of
// N*C*R*S*P*Q values (58 MB for a ResNet-20 stage-1 layer at batch 128). A chunk holds as many
// images as fit kChunkValues values of col (or of out/dyc), which keeps the GEMM wide and the
// buffers in the last-level cache. B = 1 is the textbook one-image-at-a-time algorithm.
// The lowering (im2col, col2im, the layout copies, bias, dbias) runs on the kernel thread pool
// (kernels/cpu/parallel.h) over (image, channel) pairs, each writing its own rows; gemm_cpu splits
// the GEMM over the same pool. Buffers are thread-local workspaces reused from call to call.
// 1x1 convolutions take the same path: their im2col is a plain (strided) copy of C rows, not a
// C*R*S expansion.
#include "kernels/conv2d.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/conv2d_algos.h"
#include "kernels/cpu/parallel.h"
#include "kernels/gemm.h"

namespace pb::kernels {
namespace {

using cpu::parallel_for;

void check_shape(const char* who, const Conv2dShape& s) {
  const auto dims = [&] {
    return " (N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) +
           " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) + " K=" + std::to_string(s.K) +
           " R=" + std::to_string(s.R) + " S=" + std::to_string(s.S) +
           " stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
           " pad=" + std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w) + ")";
  };
  if (s.N < 0 || s.C < 1 || s.H < 1 || s.W < 1 || s.K < 1 || s.R < 1 || s.S < 1) {
    throw std::invalid_argument(std::string(who) + ": dimensions must be positive (N may be 0)" +
                                dims());
  }
  if (s.stride_h < 1 || s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0) {
    throw std::invalid_argument(std::string(who) + ": strides must be >= 1 and padding >= 0" +
                                dims());
  }
  if (s.H + 2 * s.pad_h < s.R || s.W + 2 * s.pad_w < s.S) {
    throw std::invalid_argument(std::string(who) + ": the filter is larger than the padded input" +
                                dims());
  }
}

// ceil(a / b) for a >= 0, b > 0
int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The output indices o in [0, out_extent) whose input index o*stride + offset lies inside
// [0, extent): returns [lo, hi), possibly empty. offset = tap - pad.
struct Range {
  int64_t lo, hi;
};
Range valid_outputs(int64_t offset, int64_t stride, int64_t extent, int64_t out_extent) {
  const int64_t lo = offset >= 0 ? 0 : ceil_div(-offset, stride);
  const int64_t hi = extent > offset ? ceil_div(extent - offset, stride) : 0;
  const int64_t hi_clamped = std::min(hi, out_extent);
  return {std::min(lo, hi_clamped), hi_clamped};
}

// Channel c of x_n (H,W) -> rows (c,r,s) of col, P*Q columns each from col_c, row stride ld.
template <typename T>
void im2col_channel(const Conv2dShape& s, const T* x_c, T* col_c, int64_t ld) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t r = 0; r < s.R; ++r) {
    const Range ps = valid_outputs(r - s.pad_h, s.stride_h, s.H, P);
    for (int64_t t = 0; t < s.S; ++t) {
      const Range qs = valid_outputs(t - s.pad_w, s.stride_w, s.W, Q);
      T* row = col_c + (r * s.S + t) * ld;  // (P,Q)
      if (qs.lo == qs.hi) {                 // this tap reads only padding
        std::fill(row, row + P * Q, T(0));
        continue;
      }
      std::fill(row, row + ps.lo * Q, T(0));
      for (int64_t p = ps.lo; p < ps.hi; ++p) {
        const T* x_row = x_c + (p * s.stride_h - s.pad_h + r) * s.W;  // (W)
        T* out = row + p * Q;                                         // (Q)
        std::fill(out, out + qs.lo, T(0));
        const T* in = x_row + (qs.lo * s.stride_w - s.pad_w + t);  // under (p, qs.lo)
        if (s.stride_w == 1) {
          std::copy(in, in + (qs.hi - qs.lo), out + qs.lo);
        } else {
          for (int64_t q = qs.lo; q < qs.hi; ++q, in += s.stride_w) out[q] = *in;
        }
        std::fill(out + qs.hi, out + Q, T(0));
      }
      std::fill(row + ps.hi * Q, row + P * Q, T(0));
    }
  }
}

// Rows (c,r,s) of dcol (P*Q columns from dcol_c, row stride ld) -> dx_c (H,W), accumulated (+=).
template <typename T>
void col2im_channel_add(const Conv2dShape& s, const T* dcol_c, int64_t ld, T* dx_c) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t r = 0; r < s.R; ++r) {
    const Range ps = valid_outputs(r - s.pad_h, s.stride_h, s.H, P);
    for (int64_t t = 0; t < s.S; ++t) {
      const Range qs = valid_outputs(t - s.pad_w, s.stride_w, s.W, Q);
      const T* row = dcol_c + (r * s.S + t) * ld;  // (P,Q)
      if (qs.lo == qs.hi) continue;                // this tap reads only padding
      for (int64_t p = ps.lo; p < ps.hi; ++p) {
        T* dx_row = dx_c + (p * s.stride_h - s.pad_h + r) * s.W;  // (W)
        const T* in = row + p * Q;                                // (Q)
        T* out = dx_row + (qs.lo * s.stride_w - s.pad_w + t);     // under (p, qs.lo)
        if (s.stride_w == 1) {
          for (int64_t q = qs.lo; q < qs.hi; ++q) out[q - qs.lo] += in[q];  // vectorizes
        } else {
          for (int64_t q = qs.lo; q < qs.hi; ++q, out += s.stride_w) *out += in[q];
        }
      }
    }
  }
}

// Values of the largest chunk buffer (col, out or dyc); 2^21 floats = 8 MB, a quarter of the L3.
constexpr int64_t kChunkValues = int64_t(1) << 21;

// Images per chunk: as many as keep the largest per-chunk buffer within kChunkValues, at least 1.
int64_t chunk_images(const Conv2dShape& s) {
  const int64_t PQ = s.P() * s.Q(), rows = std::max(s.C * s.R * s.S, s.K);
  return std::clamp<int64_t>(kChunkValues / std::max<int64_t>(rows * PQ, 1), 1,
                             std::max<int64_t>(s.N, 1));
}

// x images [n0, n0+B) -> col (CRS, B*PQ)
template <typename T>
void im2col_chunk(const Conv2dShape& s, const T* x, int64_t n0, int64_t B, T* col) {
  const int64_t PQ = s.P() * s.Q(), ld = B * PQ, RS = s.R * s.S;
  parallel_for(B * s.C, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t i = j / s.C, c = j % s.C;
      const T* x_c = x + ((n0 + i) * s.C + c) * s.H * s.W;  // (H,W)
      im2col_channel(s, x_c, col + c * RS * ld + i * PQ, ld);
    }
  });
}

// dy images [n0, n0+B) (B,K,PQ) -> dyc (K, B*PQ)
template <typename T>
void gather_chunk(const Conv2dShape& s, const T* dy, int64_t n0, int64_t B, T* dyc) {
  const int64_t PQ = s.P() * s.Q(), ld = B * PQ;
  parallel_for(B * s.K, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t i = j / s.K, k = j % s.K;
      const T* src = dy + ((n0 + i) * s.K + k) * PQ;  // (PQ)
      std::copy(src, src + PQ, dyc + k * ld + i * PQ);
    }
  });
}

}  // namespace

namespace cpu {

template <typename T>
void im2col_conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S;
  const int64_t chunk = chunk_images(s);
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t B = std::min(chunk, s.N - n0), ld = B * PQ;
    T* col = cpu::workspace<T>(0, CRS * ld);  // (CRS, B*PQ)
    im2col_chunk(s, x, n0, B, col);
    if (B == 1) {  // y_n (K,PQ) is the GEMM's output as it stands
      T* y_n = y + n0 * s.K * PQ;
      if (bias != nullptr) {
        for (int64_t k = 0; k < s.K; ++k) std::fill(y_n + k * PQ, y_n + (k + 1) * PQ, bias[k]);
      }
      gemm_cpu<T>(Trans::No, Trans::No, s.K, PQ, CRS, T(1), w, CRS, col, PQ,
                  bias != nullptr ? T(1) : T(0), y_n, PQ);
      continue;
    }
    T* out = cpu::workspace<T>(1, s.K * ld);  // (K, B*PQ)
    gemm_cpu<T>(Trans::No, Trans::No, s.K, ld, CRS, T(1), w, CRS, col, ld, T(0), out, ld);
    // out (K, B*PQ) -> y images [n0, n0+B) (B,K,PQ), plus the bias.
    parallel_for(B * s.K, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t i = j / s.K, k = j % s.K;
        const T* src = out + k * ld + i * PQ;    // (PQ)
        T* dst = y + ((n0 + i) * s.K + k) * PQ;  // (PQ)
        if (bias == nullptr) {
          std::copy(src, src + PQ, dst);
        } else {
          const T b = bias[k];
          for (int64_t e = 0; e < PQ; ++e) dst[e] = src[e] + b;
        }
      }
    });
  }
}

template <typename T>
void im2col_conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S, HW = s.H * s.W, RS = s.R * s.S;
  const int64_t chunk = chunk_images(s);
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t B = std::min(chunk, s.N - n0), ld = B * PQ;
    const T* dyc = dy + n0 * s.K * PQ;  // (K,PQ) as it stands when B == 1
    if (B > 1) {
      T* gathered = cpu::workspace<T>(1, s.K * ld);  // (K, B*PQ)
      gather_chunk(s, dy, n0, B, gathered);
      dyc = gathered;
    }
    T* dcol = cpu::workspace<T>(0, CRS * ld);  // (CRS, B*PQ)
    gemm_cpu<T>(Trans::Yes, Trans::No, CRS, ld, s.K, T(1), w, CRS, dyc, ld, T(0), dcol, ld);
    parallel_for(B * s.C, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t i = j / s.C, c = j % s.C;
        T* dx_c = dx + ((n0 + i) * s.C + c) * HW;  // (H,W)
        std::fill(dx_c, dx_c + HW, T(0));
        col2im_channel_add(s, dcol + c * RS * ld + i * PQ, ld, dx_c);
      }
    });
  }
}

template <typename T>
void im2col_conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S;
  if (s.N == 0) std::fill(dw, dw + s.K * CRS, T(0));
  const int64_t chunk = chunk_images(s);
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t B = std::min(chunk, s.N - n0), ld = B * PQ;
    T* col = cpu::workspace<T>(0, CRS * ld);  // (CRS, B*PQ)
    im2col_chunk(s, x, n0, B, col);
    const T* dyc = dy + n0 * s.K * PQ;  // (K,PQ) as it stands when B == 1
    if (B > 1) {
      T* gathered = cpu::workspace<T>(1, s.K * ld);  // (K, B*PQ)
      gather_chunk(s, dy, n0, B, gathered);
      dyc = gathered;
    }
    // dw(K,CRS) (+)= dyc(K,B*PQ) * col^T(B*PQ,CRS); the first chunk overwrites.
    const T beta = n0 == 0 ? T(0) : T(1);
    gemm_cpu<T>(Trans::No, Trans::Yes, s.K, CRS, ld, T(1), dyc, ld, col, ld, beta, dw, CRS);
  }
}

template void im2col_conv2d_forward<float>(const Conv2dShape&, const float*, const float*,
                                           const float*, float*);
template void im2col_conv2d_forward<double>(const Conv2dShape&, const double*, const double*,
                                            const double*, double*);
template void im2col_conv2d_backward_data<float>(const Conv2dShape&, const float*, const float*,
                                                 float*);
template void im2col_conv2d_backward_data<double>(const Conv2dShape&, const double*, const double*,
                                                  double*);
template void im2col_conv2d_backward_weight<float>(const Conv2dShape&, const float*, const float*,
                                                   float*);
template void im2col_conv2d_backward_weight<double>(const Conv2dShape&, const double*,
                                                    const double*, double*);

}  // namespace cpu

namespace {

template <typename T>
bool takes_direct_path(const Conv2dShape& s) {
  if constexpr (std::is_same_v<T, float>) {
    return cpu::direct_conv2d_applies(s);
  } else {
    return false;
  }
}

}  // namespace

template <typename T>
void conv2d_forward_cpu(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  check_shape("conv2d_forward_cpu", s);
  if constexpr (std::is_same_v<T, float>) {
    if (takes_direct_path<T>(s)) return cpu::direct_conv2d_forward(s, x, w, bias, y);
  }
  cpu::im2col_conv2d_forward(s, x, w, bias, y);
}

template <typename T>
void conv2d_backward_data_cpu(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  check_shape("conv2d_backward_data_cpu", s);
  if constexpr (std::is_same_v<T, float>) {
    if (takes_direct_path<T>(s)) return cpu::direct_conv2d_backward_data(s, dy, w, dx);
  }
  cpu::im2col_conv2d_backward_data(s, dy, w, dx);
}

template <typename T>
void conv2d_backward_weight_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  check_shape("conv2d_backward_weight_cpu", s);
  const int64_t PQ = s.P() * s.Q();
  bool direct = false;
  if constexpr (std::is_same_v<T, float>) direct = takes_direct_path<T>(s);
  if constexpr (std::is_same_v<T, float>) {
    if (direct) cpu::direct_conv2d_backward_weight(s, x, dy, dw);
  }
  if (!direct) cpu::im2col_conv2d_backward_weight(s, x, dy, dw);
  // dbias(K) = sum of dy over n, p, q; each k summed by one thread in a fixed order.
  if (dbias != nullptr) {
    parallel_for(s.K, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        T sum = T(0);
        for (int64_t n = 0; n < s.N; ++n) {
          const T* dy_nk = dy + (n * s.K + k) * PQ;  // (PQ)
          for (int64_t i = 0; i < PQ; ++i) sum += dy_nk[i];
        }
        dbias[k] = sum;
      }
    });
  }
}

template void conv2d_forward_cpu<float>(const Conv2dShape&, const float*, const float*,
                                        const float*, float*);
template void conv2d_forward_cpu<double>(const Conv2dShape&, const double*, const double*,
                                         const double*, double*);
template void conv2d_backward_data_cpu<float>(const Conv2dShape&, const float*, const float*,
                                              float*);
template void conv2d_backward_data_cpu<double>(const Conv2dShape&, const double*, const double*,
                                               double*);
template void conv2d_backward_weight_cpu<float>(const Conv2dShape&, const float*, const float*,
                                                float*, float*);
template void conv2d_backward_weight_cpu<double>(const Conv2dShape&, const double*, const double*,
                                                 double*, double*);

}  // namespace pb::kernels
