// CPU losses: softmax cross-entropy with label smoothing and per-example weights, and MSE.
// Reductions accumulate in double for every T.
#include "kernels/loss.h"

#include <cmath>

namespace pb::kernels {

// Per row i of logits (N,K), with lse = max + log(sum_k exp(logit_k - max)):
//   log p_k = logit_k - lse,  probs_k = exp(log p_k)
//   l_i = -sum_k q_k log p_k = -(1 - s) log p_label - (s / K) sum_k log p_k
// Subtracting the row max keeps every exp() argument <= 0, so large logits cannot overflow.
// Examples with w_i == 0 are skipped in the sums (their label is not even read), so a padded
// example with garbage logits or label changes nothing, bit for bit.
template <typename T>
void softmax_cross_entropy_forward_cpu(int64_t N, int64_t K, const T* logits, const int32_t* labels,
                                       const T* weights, T smoothing, T* loss, T* probs) {
  const double s = static_cast<double>(smoothing);
  double weighted_sum = 0.0, weight_total = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    const T* z = logits + i * K;  // (K)
    T* pr = probs + i * K;        // (K)
    double mx = -INFINITY;
    for (int64_t k = 0; k < K; ++k) mx = std::fmax(mx, static_cast<double>(z[k]));
    double sum_exp = 0.0;
    for (int64_t k = 0; k < K; ++k) sum_exp += std::exp(static_cast<double>(z[k]) - mx);
    const double lse = mx + std::log(sum_exp);
    double sum_logp = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double logp = static_cast<double>(z[k]) - lse;
      sum_logp += logp;
      pr[k] = static_cast<T>(std::exp(logp));
    }

    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    if (w == 0.0) continue;
    const double logp_label = static_cast<double>(z[labels[i]]) - lse;
    const double l = -(1.0 - s) * logp_label - (s / static_cast<double>(K)) * sum_logp;
    weighted_sum += w * l;
    weight_total += w;
  }
  *loss = weight_total == 0.0 ? T(0) : static_cast<T>(weighted_sum / weight_total);
}

// dlogits_ik = dloss * w_i * (probs_ik - q_ik) / sum_i w_i,  q_ik = (1 - s) [k == label_i] + s / K.
// Rows with w_i == 0, and everything when sum_i w_i == 0, get exactly 0.
template <typename T>
void softmax_cross_entropy_backward_cpu(int64_t N, int64_t K, const T* probs, const int32_t* labels,
                                        const T* weights, T smoothing, const T* dloss, T* dlogits) {
  const double s = static_cast<double>(smoothing);
  double weight_total = 0.0;
  for (int64_t i = 0; i < N; ++i) weight_total += weights ? static_cast<double>(weights[i]) : 1.0;
  for (int64_t i = 0; i < N; ++i) {
    const T* pr = probs + i * K;  // (K)
    T* dz = dlogits + i * K;      // (K)
    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    if (w == 0.0 || weight_total == 0.0) {
      for (int64_t k = 0; k < K; ++k) dz[k] = T(0);
      continue;
    }
    const double coef = static_cast<double>(*dloss) * w / weight_total;
    const double q_off = s / static_cast<double>(K);
    for (int64_t k = 0; k < K; ++k) {
      const double q = (k == labels[i] ? 1.0 - s : 0.0) + q_off;
      dz[k] = static_cast<T>(coef * (static_cast<double>(pr[k]) - q));
    }
  }
}

// loss = sum_i (pred_i - target_i)^2 / n; 0 for n == 0 (an empty mean, like an all-zero-weight
// cross-entropy batch).
template <typename T>
void mse_forward_cpu(int64_t n, const T* pred, const T* target, T* loss) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(pred[i]) - static_cast<double>(target[i]);
    sum += d * d;
  }
  *loss = n > 0 ? static_cast<T>(sum / static_cast<double>(n)) : T(0);
}

// dpred = 2 dloss (pred - target) / n,  dtarget = -dpred.
template <typename T>
void mse_backward_cpu(int64_t n, const T* pred, const T* target, const T* dloss, T* dpred,
                      T* dtarget) {
  if (n <= 0) return;
  const double coef = 2.0 * static_cast<double>(*dloss) / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = coef * (static_cast<double>(pred[i]) - static_cast<double>(target[i]));
    if (dpred) dpred[i] = static_cast<T>(g);
    if (dtarget) dtarget[i] = static_cast<T>(-g);
  }
}

#define PB_INSTANTIATE_LOSS(T)                                                                    \
  template void softmax_cross_entropy_forward_cpu<T>(int64_t, int64_t, const T*, const int32_t*,  \
                                                     const T*, T, T*, T*);                        \
  template void softmax_cross_entropy_backward_cpu<T>(int64_t, int64_t, const T*, const int32_t*, \
                                                      const T*, T, const T*, T*);                 \
  template void mse_forward_cpu<T>(int64_t, const T*, const T*, T*);                              \
  template void mse_backward_cpu<T>(int64_t, const T*, const T*, const T*, T*, T*);

PB_INSTANTIATE_LOSS(float)
PB_INSTANTIATE_LOSS(double)
#undef PB_INSTANTIATE_LOSS

}  // namespace pb::kernels
