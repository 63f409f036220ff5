// CPU elementwise kernels over n contiguous elements; every loop reads element i before it
// writes element i, so in-place use (output == input) is safe. Large arrays are split into
// contiguous blocks over the kernel pool (kernels/cpu/parallel.h): each element is computed alone,
// so the result does not depend on the split.
#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace pb::kernels {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;    // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/sqrt(2*pi)

// Standard normal CDF. Phi(x) = 0.5 * erfc(-x / sqrt(2)) rather than 0.5 * (1 + erf(x / sqrt(2))):
// for negative x the erf form cancels (1 + erf -> 0) and loses all precision below x ~ -6 in
// double (~ -4 in float), while erfc keeps full relative precision in the left tail.
template <typename T>
T normal_cdf(T x) {
  return T(0.5) * std::erfc(-x * static_cast<T>(kInvSqrt2));
}

// Elements per block handed to a pool thread: below 2 blocks the loop runs on the caller, where
// waking a thread would cost more than it saves (a block is ~128-384 KB of reads and writes).
constexpr int64_t kBlock = int64_t(1) << 15;

// fn(begin, end) over [0, n), in blocks over the pool when n is large.
template <typename F>
void over_elements(int64_t n, F fn) {
  if (n < 2 * kBlock) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  cpu::parallel_for(blocks,
                    [&](int64_t b0, int64_t b1) { fn(b0 * kBlock, std::min(n, b1 * kBlock)); });
}

}  // namespace

// (n) y = max(x, 0). Written as x < 0 ? 0 : x so that a NaN input stays NaN (a diverged run must
// not be hidden by a ReLU).
template <typename T>
void relu_forward_cpu(int64_t n, const T* x, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
  });
}

// (n) dx = x > 0 ? dy : 0
template <typename T>
void relu_backward_cpu(int64_t n, const T* x, const T* dy, T* dx) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dx[i] = x[i] > T(0) ? dy[i] : T(0);
  });
}

// (n) y = x * Phi(x)
template <typename T>
void gelu_forward_cpu(int64_t n, const T* x, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = x[i] * normal_cdf(x[i]);
  });
}

// (n) dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
template <typename T>
void gelu_backward_cpu(int64_t n, const T* x, const T* dy, T* dx) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T v = x[i];
      const T pdf = static_cast<T>(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v);
      dx[i] = dy[i] * (normal_cdf(v) + v * pdf);
    }
  });
}

// (n) y = a + b
template <typename T>
void add_cpu(int64_t n, const T* a, const T* b, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
  });
}

// (n) y = relu(a + b): the sum is rounded to T first, exactly as add_cpu then relu_forward_cpu.
template <typename T>
void add_relu_cpu(int64_t n, const T* a, const T* b, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T s = a[i] + b[i];
      y[i] = s < T(0) ? T(0) : s;
    }
  });
}

// (n) dx = y > 0 ? dy : 0, y the forward output (y > 0 iff a + b > 0)
template <typename T>
void add_relu_backward_cpu(int64_t n, const T* y, const T* dy, T* dx) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
  });
}

// (n) y = alpha * x
template <typename T>
void scale_cpu(int64_t n, T alpha, const T* x, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = alpha * x[i];
  });
}

// (n) y += alpha * x
template <typename T>
void axpy_cpu(int64_t n, T alpha, const T* x, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] += alpha * x[i];
  });
}

// (n) y = value
template <typename T>
void fill_cpu(int64_t n, T value, T* y) {
  over_elements(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = value;
  });
}

#define PB_INSTANTIATE_ELEMENTWISE(T)                                      \
  template void relu_forward_cpu<T>(int64_t, const T*, T*);                \
  template void relu_backward_cpu<T>(int64_t, const T*, const T*, T*);     \
  template void gelu_forward_cpu<T>(int64_t, const T*, T*);                \
  template void gelu_backward_cpu<T>(int64_t, const T*, const T*, T*);     \
  template void add_cpu<T>(int64_t, const T*, const T*, T*);               \
  template void add_relu_cpu<T>(int64_t, const T*, const T*, T*);          \
  template void add_relu_backward_cpu<T>(int64_t, const T*, const T*, T*); \
  template void scale_cpu<T>(int64_t, T, const T*, T*);                    \
  template void axpy_cpu<T>(int64_t, T, const T*, T*);                     \
  template void fill_cpu<T>(int64_t, T, T*);

PB_INSTANTIATE_ELEMENTWISE(float)
PB_INSTANTIATE_ELEMENTWISE(double)
#undef PB_INSTANTIATE_ELEMENTWISE

}  // namespace pb::kernels
