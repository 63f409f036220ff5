// CPU optimizer updates and multi-tensor helpers: the reference for kernels/cuda/optim.cu.
// One loop over the tensor list, one pass over each tensor (two for lars and lamb: per-tensor
// norms, accumulated in double in index order, then the update). The per-element rules live in
// kernels/optim.h (optim_detail), shared with the CUDA kernels.
#include "kernels/optim.h"

#include <cmath>
#include <utility>

namespace pb::kernels {
namespace {

using optim_detail::Constants;

template <OptimRule R, typename T>
void update_rule(const OptimStep& step, int64_t count, const OptimTensor<T>* tensors,
                 const T* grad_scale) {
  const Constants<T> c = optim_detail::constants<T>(step);
  for (int64_t k = 0; k < count; ++k) {
    const OptimTensor<T>& tensor = tensors[k];
    const int64_t n = tensor.n;
    T* param = tensor.param;      // (n)
    const T* grad = tensor.grad;  // (n)
    T* slot0 = tensor.slot0;      // (n) or null
    T* slot1 = tensor.slot1;      // (n) or null
    const T wd = tensor.weight_decay;
    auto scaled_grad = [&](int64_t i) { return grad_scale ? grad[i] * *grad_scale : grad[i]; };

    // First pass (lars, lamb): this tensor's norms, and lamb's moments.
    double tau = 1.0;
    if constexpr (R == OptimRule::kLars) {
      double param_sq = 0.0, grad_sq = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double p = static_cast<double>(param[i]);
        const double g = static_cast<double>(scaled_grad(i));
        param_sq += p * p;
        grad_sq += g * g;
      }
      if (tensor.adapt) {
        tau = optim_detail::lars_trust_ratio(std::sqrt(param_sq), std::sqrt(grad_sq),
                                             static_cast<double>(wd), step.trust_coefficient,
                                             step.eps);
      }
    } else if constexpr (R == OptimRule::kLamb) {
      double param_sq = 0.0, dir_sq = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        optim_detail::update_moments(c, scaled_grad(i), slot0[i], slot1[i]);
        const double p = static_cast<double>(param[i]);
        const double r =
            static_cast<double>(optim_detail::lamb_direction(c, param[i], slot0[i], slot1[i], wd));
        param_sq += p * p;
        dir_sq += r * r;
      }
      if (tensor.adapt)
        tau = optim_detail::lamb_trust_ratio(std::sqrt(param_sq), std::sqrt(dir_sq));
    }

    // The update.
    const T tau_t = static_cast<T>(tau);
    T unused0 = T(0), unused1 = T(0);
    for (int64_t i = 0; i < n; ++i) {
      T& s0 = slot0 ? slot0[i] : unused0;
      T& s1 = slot1 ? slot1[i] : unused1;
      const T theta = param[i];
      const T d = optim_detail::step_of<R, T>(c, theta, scaled_grad(i), wd, tau_t, s0, s1);
      if (tensor.update) {
        tensor.update[i] = d;
      } else {
        param[i] = theta - d;
      }
    }
  }
}

}  // namespace

template <typename T>
void optim_update_cpu(const OptimStep& step, int64_t count, const OptimTensor<T>* tensors,
                      const T* grad_scale) {
  switch (step.rule) {
    case OptimRule::kSgd:
      return update_rule<OptimRule::kSgd>(step, count, tensors, grad_scale);
    case OptimRule::kMomentum:
      return update_rule<OptimRule::kMomentum>(step, count, tensors, grad_scale);
    case OptimRule::kNesterov:
      return update_rule<OptimRule::kNesterov>(step, count, tensors, grad_scale);
    case OptimRule::kRmsProp:
      return update_rule<OptimRule::kRmsProp>(step, count, tensors, grad_scale);
    case OptimRule::kAdam:
      return update_rule<OptimRule::kAdam>(step, count, tensors, grad_scale);
    case OptimRule::kNAdam:
      return update_rule<OptimRule::kNAdam>(step, count, tensors, grad_scale);
    case OptimRule::kAdamW:
      return update_rule<OptimRule::kAdamW>(step, count, tensors, grad_scale);
    case OptimRule::kLars:
      return update_rule<OptimRule::kLars>(step, count, tensors, grad_scale);
    case OptimRule::kLamb:
      return update_rule<OptimRule::kLamb>(step, count, tensors, grad_scale);
  }
}

// (n) per pair: y = decay y + (1 - decay) x
template <typename T>
void ema_update_cpu(int64_t count, const TensorPair<T>* pairs, T decay) {
  const T keep = decay;
  const T take = static_cast<T>(1.0 - static_cast<double>(decay));
  for (int64_t k = 0; k < count; ++k) {
    const T* x = pairs[k].x;
    T* y = pairs[k].y;
    for (int64_t i = 0; i < pairs[k].n; ++i) y[i] = keep * y[i] + take * x[i];
  }
}

// (n) per pair: x <-> y
template <typename T>
void swap_tensors_cpu(int64_t count, const TensorPair<T>* pairs) {
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t i = 0; i < pairs[k].n; ++i) std::swap(pairs[k].x[i], pairs[k].y[i]);
  }
}

// (n) per pair: x -= scale y
template <typename T>
void apply_scaled_update_cpu(int64_t count, const TensorPair<T>* pairs, const T* scale) {
  const T s = *scale;
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t i = 0; i < pairs[k].n; ++i) pairs[k].x[i] -= s * pairs[k].y[i];
  }
}

// (n) per pair: x *= scale (nothing when scale == 1)
template <typename T>
void scale_tensors_cpu(int64_t count, const TensorPair<T>* pairs, const T* scale) {
  const T s = *scale;
  if (s == T(1)) return;
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t i = 0; i < pairs[k].n; ++i) pairs[k].x[i] *= s;
  }
}

// () scale = norm > max_norm ? max_norm / norm : 1, counting clipped steps
template <typename T>
void clip_coefficient_cpu(const T* norm, T max_norm, T* scale, double* clipped_count) {
  const bool active = max_norm > T(0) && std::isfinite(max_norm);
  const bool clip = active && *norm > max_norm;
  *scale = clip ? max_norm / *norm : T(1);
  if (clip) *clipped_count += 1.0;
}

#define PB_INSTANTIATE_OPTIM(T)                                                                  \
  template void optim_update_cpu<T>(const OptimStep&, int64_t, const OptimTensor<T>*, const T*); \
  template void ema_update_cpu<T>(int64_t, const TensorPair<T>*, T);                             \
  template void swap_tensors_cpu<T>(int64_t, const TensorPair<T>*);                              \
  template void apply_scaled_update_cpu<T>(int64_t, const TensorPair<T>*, const T*);             \
  template void scale_tensors_cpu<T>(int64_t, const TensorPair<T>*, const T*);                   \
  template void clip_coefficient_cpu<T>(const T*, T, T*, double*);

PB_INSTANTIATE_OPTIM(float)
PB_INSTANTIATE_OPTIM(double)
#undef PB_INSTANTIATE_OPTIM

}  // namespace pb::kernels
