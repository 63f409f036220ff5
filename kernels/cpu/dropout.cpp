// CPU inverted dropout with the counter-based Philox mask of kernels/dropout.h: element i is kept
// iff philox_uniform(seed, offset, i) >= p and kept values are multiplied by 1/(1-p). The CUDA
// kernel draws the same uniform for the same i and uses the same float scale, so both produce the
// same mask and, for float, the same values bit for bit.
#include "kernels/dropout.h"

#include "kernels/philox.h"

namespace pb::kernels {
namespace {

// (n) out = keep_i ? in * 1/(1-p) : 0, shared by forward (x -> y) and backward (dy -> dx).
template <typename T>
void apply_dropout_mask(int64_t n, float p, uint64_t seed, uint64_t offset, const T* in, T* out) {
  if (p == 0.0f) {  // keep everything: an exact copy, no random numbers drawn
    for (int64_t i = 0; i < n; ++i) out[i] = in[i];
    return;
  }
  const T scale = T(1) / (T(1) - static_cast<T>(p));
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, offset, static_cast<uint64_t>(i)) >= p;
    out[i] = keep ? in[i] * scale : T(0);
  }
}

}  // namespace

template <typename T>
void dropout_forward_cpu(int64_t n, float p, uint64_t seed, uint64_t offset, const T* x, T* y) {
  apply_dropout_mask(n, p, seed, offset, x, y);
}

// The mask is recomputed from (seed, offset, i), so the same arguments as the forward call give
// the same kept elements.
template <typename T>
void dropout_backward_cpu(int64_t n, float p, uint64_t seed, uint64_t offset, const T* dy, T* dx) {
  apply_dropout_mask(n, p, seed, offset, dy, dx);
}

template void dropout_forward_cpu<float>(int64_t, float, uint64_t, uint64_t, const float*, float*);
template void dropout_forward_cpu<double>(int64_t, float, uint64_t, uint64_t, const double*,
                                          double*);
template void dropout_backward_cpu<float>(int64_t, float, uint64_t, uint64_t, const float*, float*);
template void dropout_backward_cpu<double>(int64_t, float, uint64_t, uint64_t, const double*,
                                           double*);

}  // namespace pb::kernels
