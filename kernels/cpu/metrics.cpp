// CPU classification metrics.
#include "kernels/metrics.h"

#include <cmath>

namespace pb::kernels {

// Per row i of logits (N,K): rank = #{k : logit_k > logit_label}; error iff rank >= k, so ties
// with the label's logit count in the example's favour. A NaN label logit compares false with
// everything and would otherwise look like a perfect prediction; it is counted as an error so a
// diverged model cannot report a low error. Examples with w_i == 0 are skipped (label unread).
template <typename T>
void topk_error_count_cpu(int64_t N, int64_t K, int64_t k, const T* logits, const int32_t* labels,
                          const T* weights, T* errors, T* total) {
  double err = 0.0, tot = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    if (w == 0.0) continue;
    const T* z = logits + i * K;  // (K)
    const T target = z[labels[i]];
    bool is_error = true;
    if (!std::isnan(target)) {
      int64_t greater = 0;
      for (int64_t j = 0; j < K; ++j) greater += z[j] > target ? 1 : 0;
      is_error = greater >= k;
    }
    if (is_error) err += w;
    tot += w;
  }
  *errors = static_cast<T>(err);
  *total = static_cast<T>(tot);
}

template void topk_error_count_cpu<float>(int64_t, int64_t, int64_t, const float*, const int32_t*,
                                          const float*, float*, float*);
template void topk_error_count_cpu<double>(int64_t, int64_t, int64_t, const double*, const int32_t*,
                                           const double*, double*, double*);

}  // namespace pb::kernels
