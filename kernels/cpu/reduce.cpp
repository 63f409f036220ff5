// CPU reductions to one element, accumulated in double in index order: the reference for
// kernels/cuda/reduce.cu.
#include "kernels/reduce.h"

#include <cmath>

namespace pb::kernels {

// *out = sum_i x_i (n elements)
template <typename T>
void sum_cpu(int64_t n, const T* x, T* out) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]);
  *out = static_cast<T>(acc);
}

// *out = sum_i x_i / n; 0 when n == 0
template <typename T>
void mean_cpu(int64_t n, const T* x, T* out) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]);
  *out = n > 0 ? static_cast<T>(acc / static_cast<double>(n)) : T(0);
}

// *out = sqrt(sum over tensors t, elements i of ptrs[t][i]^2)
template <typename T>
void global_l2_norm_cpu(int count, const T* const* ptrs, const int64_t* sizes, T* out) {
  double acc = 0.0;
  for (int t = 0; t < count; ++t) {
    const T* p = ptrs[t];  // (sizes[t])
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double v = static_cast<double>(p[i]);
      acc += v * v;
    }
  }
  *out = static_cast<T>(std::sqrt(acc));
}

#define PB_INSTANTIATE_REDUCE(T)                    \
  template void sum_cpu<T>(int64_t, const T*, T*);  \
  template void mean_cpu<T>(int64_t, const T*, T*); \
  template void global_l2_norm_cpu<T>(int, const T* const*, const int64_t*, T*);

PB_INSTANTIATE_REDUCE(float)
PB_INSTANTIATE_REDUCE(double)
#undef PB_INSTANTIATE_REDUCE

}  // namespace pb::kernels
