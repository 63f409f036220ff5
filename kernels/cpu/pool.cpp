// Pooling on the CPU, one (H,W) plane at a time; N*C planes per tensor.
//   x, dx: (N,C,H,W)   y, dy, argmax: (N,C,P,Q)
// Window (p,q) covers input rows p*stride_h - pad_h + [0, kh) and columns q*stride_w - pad_w +
// [0, kw); cells outside the input are padding: never a max, counted as zeros by average pooling.
#include "kernels/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace pb::kernels {
namespace {

void check_shape(const char* who, const Pool2dShape& s) {
  const auto dims = [&] {
    return " (N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) +
           " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) +
           " kernel=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
           " stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
           " pad=" + std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w) + ")";
  };
  if (s.N < 0 || s.C < 0 || s.H < 1 || s.W < 1 || s.kh < 1 || s.kw < 1 || s.stride_h < 1 ||
      s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0) {
    throw std::invalid_argument(std::string(who) + ": invalid pooling shape" + dims());
  }
  if (s.H + 2 * s.pad_h < s.kh || s.W + 2 * s.pad_w < s.kw) {
    throw std::invalid_argument(std::string(who) + ": window larger than the padded input" +
                                dims());
  }
}

// The part of a window that lies inside the input: rows [h0,h1), columns [w0,w1).
struct Window {
  int64_t h0, h1, w0, w1;
};
Window clip_window(const Pool2dShape& s, int64_t p, int64_t q) {
  const int64_t h = p * s.stride_h - s.pad_h, w = q * s.stride_w - s.pad_w;
  return {std::max<int64_t>(h, 0), std::min(h + s.kh, s.H), std::max<int64_t>(w, 0),
          std::min(w + s.kw, s.W)};
}

}  // namespace

template <typename T>
void max_pool2d_forward_cpu(const Pool2dShape& s, const T* x, T* y, int32_t* argmax) {
  check_shape("max_pool2d_forward_cpu", s);
  if (s.H * s.W > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("max_pool2d_forward_cpu: H*W = " + std::to_string(s.H * s.W) +
                                " does not fit the int32 argmax");
  }
  const int64_t P = s.P(), Q = s.Q(), HW = s.H * s.W;
  for (int64_t plane = 0; plane < s.N * s.C; ++plane) {
    const T* x_pl = x + plane * HW;  // (H,W)
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t q = 0; q < Q; ++q) {
        const Window win = clip_window(s, p, q);
        // Scan in row-major order and replace only on a strictly larger value, so the first max
        // wins ties. A NaN wins (the first one), so divergence shows up instead of being hidden.
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_idx = -1;  // stays -1 only for a window that is all padding
        for (int64_t h = win.h0; h < win.h1; ++h) {
          for (int64_t w = win.w0; w < win.w1; ++w) {
            const T v = x_pl[h * s.W + w];
            if (best_idx < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              best_idx = h * s.W + w;
            }
          }
        }
        y[(plane * P + p) * Q + q] = best;
        if (argmax != nullptr) argmax[(plane * P + p) * Q + q] = static_cast<int32_t>(best_idx);
      }
    }
  }
}

template <typename T>
void max_pool2d_backward_cpu(const Pool2dShape& s, const T* dy, const int32_t* argmax, T* dx) {
  check_shape("max_pool2d_backward_cpu", s);
  const int64_t PQ = s.P() * s.Q(), HW = s.H * s.W;
  std::fill(dx, dx + s.N * s.C * HW, T(0));
  for (int64_t plane = 0; plane < s.N * s.C; ++plane) {
    T* dx_pl = dx + plane * HW;  // (H,W)
    for (int64_t i = 0; i < PQ; ++i) {
      const int32_t idx = argmax[plane * PQ + i];
      // Overlapping windows can share a winner, hence +=.
      if (idx >= 0) dx_pl[idx] += dy[plane * PQ + i];
    }
  }
}

template <typename T>
void avg_pool2d_forward_cpu(const Pool2dShape& s, const T* x, T* y) {
  check_shape("avg_pool2d_forward_cpu", s);
  const int64_t P = s.P(), Q = s.Q(), HW = s.H * s.W;
  const T inv_area = T(1) / static_cast<T>(s.kh * s.kw);  // padding counts in the divisor
  for (int64_t plane = 0; plane < s.N * s.C; ++plane) {
    const T* x_pl = x + plane * HW;  // (H,W)
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t q = 0; q < Q; ++q) {
        const Window win = clip_window(s, p, q);
        T sum = T(0);
        for (int64_t h = win.h0; h < win.h1; ++h) {
          for (int64_t w = win.w0; w < win.w1; ++w) sum += x_pl[h * s.W + w];
        }
        y[(plane * P + p) * Q + q] = sum * inv_area;
      }
    }
  }
}

template <typename T>
void avg_pool2d_backward_cpu(const Pool2dShape& s, const T* dy, T* dx) {
  check_shape("avg_pool2d_backward_cpu", s);
  const int64_t P = s.P(), Q = s.Q(), HW = s.H * s.W;
  const T inv_area = T(1) / static_cast<T>(s.kh * s.kw);
  std::fill(dx, dx + s.N * s.C * HW, T(0));
  for (int64_t plane = 0; plane < s.N * s.C; ++plane) {
    T* dx_pl = dx + plane * HW;  // (H,W)
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t q = 0; q < Q; ++q) {
        const Window win = clip_window(s, p, q);
        const T g = dy[(plane * P + p) * Q + q] * inv_area;
        for (int64_t h = win.h0; h < win.h1; ++h) {
          for (int64_t w = win.w0; w < win.w1; ++w) dx_pl[h * s.W + w] += g;
        }
      }
    }
  }
}

// y(N,C) = mean over L of x(N,C,L)
template <typename T>
void global_avg_pool_forward_cpu(int64_t N, int64_t C, int64_t L, const T* x, T* y) {
  if (L < 1) throw std::invalid_argument("global_avg_pool_forward_cpu: L must be >= 1");
  const T inv_l = T(1) / static_cast<T>(L);
  for (int64_t i = 0; i < N * C; ++i) {
    T sum = T(0);
    for (int64_t l = 0; l < L; ++l) sum += x[i * L + l];
    y[i] = sum * inv_l;
  }
}

// dx(N,C,L) = dy(N,C) / L, broadcast over L
template <typename T>
void global_avg_pool_backward_cpu(int64_t N, int64_t C, int64_t L, const T* dy, T* dx) {
  if (L < 1) throw std::invalid_argument("global_avg_pool_backward_cpu: L must be >= 1");
  const T inv_l = T(1) / static_cast<T>(L);
  for (int64_t i = 0; i < N * C; ++i) std::fill(dx + i * L, dx + (i + 1) * L, dy[i] * inv_l);
}

template void max_pool2d_forward_cpu<float>(const Pool2dShape&, const float*, float*, int32_t*);
template void max_pool2d_forward_cpu<double>(const Pool2dShape&, const double*, double*, int32_t*);
template void max_pool2d_backward_cpu<float>(const Pool2dShape&, const float*, const int32_t*,
                                             float*);
template void max_pool2d_backward_cpu<double>(const Pool2dShape&, const double*, const int32_t*,
                                              double*);
template void avg_pool2d_forward_cpu<float>(const Pool2dShape&, const float*, float*);
template void avg_pool2d_forward_cpu<double>(const Pool2dShape&, const double*, double*);
template void avg_pool2d_backward_cpu<float>(const Pool2dShape&, const float*, float*);
template void avg_pool2d_backward_cpu<double>(const Pool2dShape&, const double*, double*);
template void global_avg_pool_forward_cpu<float>(int64_t, int64_t, int64_t, const float*, float*);
template void global_avg_pool_forward_cpu<double>(int64_t, int64_t, int64_t, const double*,
                                                  double*);
template void global_avg_pool_backward_cpu<float>(int64_t, int64_t, int64_t, const float*, float*);
template void global_avg_pool_backward_cpu<double>(int64_t, int64_t, int64_t, const double*,
                                                   double*);

}  // namespace pb::kernels
