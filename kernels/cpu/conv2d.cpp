// 2-D convolution on the CPU as im2col + GEMM, one image at a time.
//
// For image n, im2col unrolls x_n (C,H,W) into col (C*R*S, P*Q): row (c,r,s) holds, for every
// output position (p,q), the input value under filter tap (r,s) of channel c, or 0 in the padding:
//   col[(c*R + r)*S + s][p*Q + q] = x_n[c][p*stride_h - pad_h + r][q*stride_w - pad_w + s]
// With w viewed as (K, C*R*S) and y_n as (K, P*Q), each pass is then one GEMM:
//   forward          y_n  = w * col                      (K,PQ)  = (K,CRS) * (CRS,PQ)
//   backward-data    dcol = w^T * dy_n; col2im -> dx_n   (CRS,PQ) = (CRS,K) * (K,PQ)
//   backward-weight  dw  += dy_n * col^T                 (K,CRS) = (K,PQ)  * (PQ,CRS)
// col2im is the adjoint of im2col: it adds every entry of dcol back onto the input cell it was
// copied from, so overlapping windows (kernel larger than stride) accumulate.
//
// A 1x1 filter with stride 1 and no padding makes col identical to x_n viewed as (C, H*W), so that
// case skips the workspace and runs the GEMM on x_n / dx_n directly.
#include "kernels/conv2d.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"

namespace pb::kernels {
namespace {

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

bool is_pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
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

// x_n: (C,H,W) -> col: (C*R*S, P*Q)
template <typename T>
void im2col(const Conv2dShape& s, const T* x_n, T* col) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t c = 0; c < s.C; ++c) {
    const T* x_c = x_n + c * s.H * s.W;  // (H,W)
    for (int64_t r = 0; r < s.R; ++r) {
      const Range ps = valid_outputs(r - s.pad_h, s.stride_h, s.H, P);
      for (int64_t t = 0; t < s.S; ++t) {
        const Range qs = valid_outputs(t - s.pad_w, s.stride_w, s.W, Q);
        T* row = col + ((c * s.R + r) * s.S + t) * P * Q;  // (P,Q)
        if (qs.lo == qs.hi) {                              // this tap reads only padding
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
}

// col: (C*R*S, P*Q) -> dx_n: (C,H,W), accumulated (+=) onto what dx_n already holds.
template <typename T>
void col2im_add(const Conv2dShape& s, const T* col, T* dx_n) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t c = 0; c < s.C; ++c) {
    T* dx_c = dx_n + c * s.H * s.W;  // (H,W)
    for (int64_t r = 0; r < s.R; ++r) {
      const Range ps = valid_outputs(r - s.pad_h, s.stride_h, s.H, P);
      for (int64_t t = 0; t < s.S; ++t) {
        const Range qs = valid_outputs(t - s.pad_w, s.stride_w, s.W, Q);
        const T* row = col + ((c * s.R + r) * s.S + t) * P * Q;  // (P,Q)
        if (qs.lo == qs.hi) continue;                            // this tap reads only padding
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
}

}  // namespace

template <typename T>
void conv2d_forward_cpu(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  check_shape("conv2d_forward_cpu", s);
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S;
  const bool pointwise = is_pointwise(s);
  std::vector<T> col(pointwise ? 0 : CRS * PQ);  // (CRS,PQ)
  for (int64_t n = 0; n < s.N; ++n) {
    const T* x_n = x + n * s.C * s.H * s.W;  // (C,H,W)
    T* y_n = y + n * s.K * PQ;               // (K,PQ)
    const T* col_n = x_n;                    // (CRS,PQ): x_n itself when pointwise
    if (!pointwise) {
      im2col(s, x_n, col.data());
      col_n = col.data();
    }
    // Seed y_n with the bias and let the GEMM accumulate onto it.
    if (bias != nullptr) {
      for (int64_t k = 0; k < s.K; ++k) std::fill(y_n + k * PQ, y_n + (k + 1) * PQ, bias[k]);
    }
    const T beta = bias != nullptr ? T(1) : T(0);
    gemm_cpu<T>(Trans::No, Trans::No, s.K, PQ, CRS, T(1), w, CRS, col_n, PQ, beta, y_n, PQ);
  }
}

template <typename T>
void conv2d_backward_data_cpu(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  check_shape("conv2d_backward_data_cpu", s);
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S, CHW = s.C * s.H * s.W;
  const bool pointwise = is_pointwise(s);
  std::vector<T> dcol(pointwise ? 0 : CRS * PQ);  // (CRS,PQ)
  for (int64_t n = 0; n < s.N; ++n) {
    const T* dy_n = dy + n * s.K * PQ;  // (K,PQ)
    T* dx_n = dx + n * CHW;             // (C,H,W)
    if (pointwise) {
      // dx_n(C,HW) = w^T(C,K) * dy_n(K,HW)
      gemm_cpu<T>(Trans::Yes, Trans::No, CRS, PQ, s.K, T(1), w, CRS, dy_n, PQ, T(0), dx_n, PQ);
      continue;
    }
    gemm_cpu<T>(Trans::Yes, Trans::No, CRS, PQ, s.K, T(1), w, CRS, dy_n, PQ, T(0), dcol.data(), PQ);
    std::fill(dx_n, dx_n + CHW, T(0));
    col2im_add(s, dcol.data(), dx_n);
  }
}

template <typename T>
void conv2d_backward_weight_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw, T* dbias) {
  check_shape("conv2d_backward_weight_cpu", s);
  const int64_t PQ = s.P() * s.Q(), CRS = s.C * s.R * s.S;
  const bool pointwise = is_pointwise(s);
  std::vector<T> col(pointwise ? 0 : CRS * PQ);  // (CRS,PQ)
  if (s.N == 0) std::fill(dw, dw + s.K * CRS, T(0));
  for (int64_t n = 0; n < s.N; ++n) {
    const T* x_n = x + n * s.C * s.H * s.W;  // (C,H,W)
    const T* dy_n = dy + n * s.K * PQ;       // (K,PQ)
    const T* col_n = x_n;                    // (CRS,PQ): x_n itself when pointwise
    if (!pointwise) {
      im2col(s, x_n, col.data());
      col_n = col.data();
    }
    // dw(K,CRS) (+)= dy_n(K,PQ) * col^T(PQ,CRS); the first image overwrites.
    const T beta = n == 0 ? T(0) : T(1);
    gemm_cpu<T>(Trans::No, Trans::Yes, s.K, CRS, PQ, T(1), dy_n, PQ, col_n, PQ, beta, dw, CRS);
  }
  // dbias(K) = sum of dy over n, p, q
  if (dbias != nullptr) {
    for (int64_t k = 0; k < s.K; ++k) {
      T sum = T(0);
      for (int64_t n = 0; n < s.N; ++n) {
        const T* dy_nk = dy + (n * s.K + k) * PQ;  // (PQ)
        for (int64_t i = 0; i < PQ; ++i) sum += dy_nk[i];
      }
      dbias[k] = sum;
    }
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
