#pragma once
// Optimizer updates over many tensors at once, the moving average of weights, and the
// multi-tensor helpers of gradient clipping.
//
// Design note. A training step updates every parameter tensor of the model (161 tensors for
// ResNet-50), so every entry point here takes a list of tensors and does the whole list in one
// pass: one loop on the CPU, one kernel launch on the GPU (kernels/cuda/optim.cu explains the
// chunking). The update rules are the Deep Learning Tuning Playbook's, written as it writes them
// (its "update rules for all the popular optimization algorithms"), with its conventions:
// RMSProp starts from v_0 = 1 and keeps a momentum of the scaled gradient; Adam and NAdam apply
// the bias correction b_t = sqrt(1 - beta2^t) / (1 - beta1^t) to the step, outside the epsilon.
// `t` below is the 1-based number of the update being applied (the playbook's t + 1).
//
// Every rule first forms the gradient it uses:  g <- s * g + wd * theta
//   s: the gradient scale (clipping), read from memory when `grad_scale` is not null, else 1;
//   wd: the tensor's coupled (L2) weight decay, for every rule except AdamW and LAMB, whose
//       decay is decoupled (below). 0 for tensors excluded from weight decay.
// and then computes a step D that is subtracted from the parameter: theta <- theta - D (or, when
// the tensor's `update` pointer is set, D is written there and theta is left alone: update
// clipping scales D before applying it with apply_scaled_update_*).
//
//   sgd       D = lr g
//   momentum  v <- gamma v + g;                           D = lr v
//   nesterov  v <- gamma v + g;                           D = lr (gamma v + g)
//   rmsprop   v <- rho v + (1 - rho) g^2   (v_0 = 1)
//             m <- gamma m + lr / sqrt(v + eps) g;        D = m
//   adam      m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
//             D = lr b_t m / (sqrt(v) + eps),  b_t = sqrt(1 - beta2^t) / (1 - beta1^t)
//   nadam     moments as adam;  D = lr b_t (beta1 m + (1 - beta1) g) / (sqrt(v) + eps)
//   adamw     moments as adam on g without decay;  D = lr wd theta + lr b_t m / (sqrt(v) + eps)
//             (Loshchilov & Hutter's decoupled decay, scaled by the learning rate as in PyTorch)
//   lars      You, Gitman & Ginsburg 2017 ("Large Batch Training of Convolutional Networks"),
//             with momentum, as in the MLPerf reference implementation:
//             tau = eta ||theta|| / (||g_raw|| + wd ||theta|| + eps)   (g_raw = s * g, before
//                   the decay term; tau = 1 when ||theta|| or ||g_raw|| is 0, or the tensor is
//                   excluded)
//             v <- gamma v + lr tau (g_raw + wd theta);  D = v
//   lamb      You et al. 2019 ("Large Batch Optimization for Deep Learning", Algorithm 2, phi =
//             identity): moments as adam on g_raw, m^ = m / (1 - beta1^t), v^ = v / (1 - beta2^t)
//             r = m^ / (sqrt(v^) + eps) + wd theta   (decoupled decay inside the trust ratio)
//             tau = ||theta|| / ||r||   (1 when either norm is 0, or the tensor is excluded)
//             D = lr tau r
// LARS and LAMB norms are per tensor ("layer-wise"), computed from this step's values (theta
// before the update, the scaled gradient, the freshly updated moments) in double.
//
// Slots (optim_slot_count): momentum/nesterov/lars: slot0 = v; rmsprop: slot0 = v (start at 1),
// slot1 = m; adam/nadam/adamw/lamb: slot0 = m, slot1 = v. Unused slot pointers may be null.
//
// All tensors are contiguous, n elements each; param, grad, slots and update of one tensor must
// not overlap each other or any other tensor of the list.
#include <cmath>

#include "kernels/common.h"

namespace pb::kernels {

enum class OptimRule : int32_t {
  kSgd,
  kMomentum,
  kNesterov,
  kRmsProp,
  kAdam,
  kNAdam,
  kAdamW,
  kLars,
  kLamb
};
inline constexpr int kOptimRuleCount = 9;

// State tensors per parameter tensor.
PB_HOST_DEVICE constexpr int optim_slot_count(OptimRule rule) {
  switch (rule) {
    case OptimRule::kSgd:
      return 0;
    case OptimRule::kMomentum:
    case OptimRule::kNesterov:
    case OptimRule::kLars:
      return 1;
    default:
      return 2;
  }
}

// True for the rules whose weight decay is decoupled from the gradient (AdamW, LAMB).
PB_HOST_DEVICE constexpr bool optim_decoupled_decay(OptimRule rule) {
  return rule == OptimRule::kAdamW || rule == OptimRule::kLamb;
}
// True for the rules that need per-tensor norms before the update (a second pass).
PB_HOST_DEVICE constexpr bool optim_layerwise(OptimRule rule) {
  return rule == OptimRule::kLars || rule == OptimRule::kLamb;
}

// The hyperparameters of one update step, shared by every tensor. Unused fields are ignored.
struct OptimStep {
  OptimRule rule = OptimRule::kSgd;
  int64_t t = 1;          // 1-based number of this update (bias corrections)
  double lr = 0.0;        // eta_t (alpha_t for the Adam family), after the schedule
  double momentum = 0.0;  // gamma: momentum, nesterov, rmsprop, lars
  double rho = 0.9;       // rmsprop
  double beta1 = 0.9;     // adam, nadam, adamw, lamb
  double beta2 = 0.999;   // adam, nadam, adamw, lamb
  double eps = 0.0;
  double trust_coefficient = 0.001;  // lars eta
};

// One parameter tensor of the list. T is float or double (CUDA: float).
template <typename T>
struct OptimTensor {
  T* param = nullptr;       // (n) updated in place unless `update` is set
  const T* grad = nullptr;  // (n)
  T* slot0 = nullptr;       // (n) see "Slots" above
  T* slot1 = nullptr;       // (n)
  T* update = nullptr;      // (n) optional: receives D instead of theta -= D
  int64_t n = 0;
  T weight_decay = T(0);  // this tensor's wd (0 when excluded from weight decay)
  bool adapt = true;      // lars/lamb: use the trust ratio (false: tau = 1)
};

// (count tensors) One update of every tensor of the list. grad_scale: null or one element
// (host memory for the CPU, device memory for CUDA) multiplying every gradient (clipping).
template <typename T>
void optim_update_cpu(const OptimStep& step, int64_t count, const OptimTensor<T>* tensors,
                      const T* grad_scale);

// CUDA (float). Two launches for lars/lamb (per-tensor norms, then the update), one otherwise;
// more only for lists longer than kOptimCudaMaxTensorsPerLaunch. lars/lamb need a device
// workspace of at least optim_cuda_workspace_bytes() bytes for this list; it needs no
// initialisation (the call zeroes its counters on the stream first), so one buffer can be kept
// for the whole run even when later lists are shorter (other rules: workspace may be null). The
// same list (sizes and order) gives bitwise identical results on every run.
inline constexpr int kOptimCudaMaxTensorsPerLaunch = 512;
int64_t optim_cuda_workspace_bytes(OptimRule rule, int64_t count,
                                   const OptimTensor<float>* tensors);
void optim_update_cuda(cudaStream_t stream, const OptimStep& step, int64_t count,
                       const OptimTensor<float>* tensors, const float* grad_scale, void* workspace);

// ---- helpers over lists of tensor pairs --------------------------------------------------------

// Two same-size tensors of n elements.
template <typename T>
struct TensorPair {
  T* x = nullptr;
  T* y = nullptr;
  int64_t n = 0;
};

// Moving average of weights: y <- decay * y + (1 - decay) * x   (x: parameters, y: averages).
template <typename T>
void ema_update_cpu(int64_t count, const TensorPair<T>* pairs, T decay);
void ema_update_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                     float decay);

// Exchanges the contents of x and y (averages into the model and back; bitwise).
template <typename T>
void swap_tensors_cpu(int64_t count, const TensorPair<T>* pairs);
void swap_tensors_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs);

// x <- x - (*scale) * y   (x: parameters, y: updates D; scale one element, device memory for
// CUDA). Applies clipped updates.
template <typename T>
void apply_scaled_update_cpu(int64_t count, const TensorPair<T>* pairs, const T* scale);
void apply_scaled_update_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                              const float* scale);

// x <- (*scale) * x for every pair's x (y unused). The CUDA kernel reads *scale on the device
// and returns at once when it is 1 (nothing clipped: no memory traffic).
template <typename T>
void scale_tensors_cpu(int64_t count, const TensorPair<T>* pairs, const T* scale);
void scale_tensors_cuda(cudaStream_t stream, int64_t count, const TensorPair<float>* pairs,
                        const float* scale);

// Clipping by global norm (the playbook's "if ||g|| > lambda then g' = lambda g / ||g||"):
//   *scale = *norm > max_norm ? max_norm / *norm : 1;   clipped_count[0] += (*norm > max_norm)
// max_norm <= 0 or infinite: never clip (*scale = 1). A NaN norm is not clipped (scale 1) so
// the NaN reaches the loss and the trial is reported, not hidden. On CUDA one thread reads the
// norm on the device: no host sync.
template <typename T>
void clip_coefficient_cpu(const T* norm, T max_norm, T* scale, double* clipped_count);
void clip_coefficient_cuda(cudaStream_t stream, const float* norm, float max_norm, float* scale,
                           double* clipped_count);

// ---- the per-element rules, shared by the CPU and CUDA kernels ----------------------------------
namespace optim_detail {

template <typename T>
PB_HOST_DEVICE inline T sqrt_of(T x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// OptimStep in the element type, with the step-dependent factors folded in on the host (in
// double, then rounded once), so the CPU and CUDA kernels see the same constants.
template <typename T>
struct Constants {
  T lr, momentum, rho, one_minus_rho, beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  T lr_b;       // lr * sqrt(1 - beta2^t) / (1 - beta1^t)   (adam, nadam, adamw)
  T inv_bias1;  // 1 / (1 - beta1^t)   (lamb)
  T inv_bias2;  // 1 / (1 - beta2^t)   (lamb)
};

template <typename T>
inline Constants<T> constants(const OptimStep& s) {
  const double t = static_cast<double>(s.t);
  const double bias1 = 1.0 - std::pow(s.beta1, t);
  const double bias2 = 1.0 - std::pow(s.beta2, t);
  Constants<T> c{};
  c.lr = static_cast<T>(s.lr);
  c.momentum = static_cast<T>(s.momentum);
  c.rho = static_cast<T>(s.rho);
  c.one_minus_rho = static_cast<T>(1.0 - s.rho);
  c.beta1 = static_cast<T>(s.beta1);
  c.one_minus_beta1 = static_cast<T>(1.0 - s.beta1);
  c.beta2 = static_cast<T>(s.beta2);
  c.one_minus_beta2 = static_cast<T>(1.0 - s.beta2);
  c.eps = static_cast<T>(s.eps);
  c.lr_b = static_cast<T>(s.lr * std::sqrt(bias2) / bias1);
  c.inv_bias1 = static_cast<T>(1.0 / bias1);
  c.inv_bias2 = static_cast<T>(1.0 / bias2);
  return c;
}

// LAMB's r = m^ / (sqrt(v^) + eps) + wd theta from the updated moments.
template <typename T>
PB_HOST_DEVICE inline T lamb_direction(const Constants<T>& c, T theta, T m, T v, T wd) {
  return (m * c.inv_bias1) / (sqrt_of(v * c.inv_bias2) + c.eps) + wd * theta;
}

// Updates the moments of adam-like rules (adam, nadam, adamw, lamb) in place.
template <typename T>
PB_HOST_DEVICE inline void update_moments(const Constants<T>& c, T g, T& m, T& v) {
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * (g * g);
}

// The step D of one element for the single-pass rules and the second pass of lars/lamb.
// g: the scaled gradient s * g (without decay); wd: the tensor's weight decay; tau: the trust
// ratio (lars, lamb; 1 otherwise). Updates the slots (for lamb: reads the moments updated by the
// first pass).
template <OptimRule R, typename T>
PB_HOST_DEVICE inline T step_of(const Constants<T>& c, T theta, T g, T wd, T tau, T& s0, T& s1) {
  if constexpr (!optim_decoupled_decay(R)) g = g + wd * theta;
  if constexpr (R == OptimRule::kSgd) {
    return c.lr * g;
  } else if constexpr (R == OptimRule::kMomentum) {
    s0 = c.momentum * s0 + g;
    return c.lr * s0;
  } else if constexpr (R == OptimRule::kNesterov) {
    s0 = c.momentum * s0 + g;
    return c.lr * (c.momentum * s0 + g);
  } else if constexpr (R == OptimRule::kRmsProp) {
    s0 = c.rho * s0 + c.one_minus_rho * (g * g);
    s1 = c.momentum * s1 + (c.lr / sqrt_of(s0 + c.eps)) * g;
    return s1;
  } else if constexpr (R == OptimRule::kAdam) {
    update_moments(c, g, s0, s1);
    return c.lr_b * (s0 / (sqrt_of(s1) + c.eps));
  } else if constexpr (R == OptimRule::kNAdam) {
    update_moments(c, g, s0, s1);
    return c.lr_b * ((c.beta1 * s0 + c.one_minus_beta1 * g) / (sqrt_of(s1) + c.eps));
  } else if constexpr (R == OptimRule::kAdamW) {
    update_moments(c, g, s0, s1);
    return c.lr * (wd * theta) + c.lr_b * (s0 / (sqrt_of(s1) + c.eps));
  } else if constexpr (R == OptimRule::kLars) {
    s0 = c.momentum * s0 + (c.lr * tau) * g;
    return s0;
  } else {  // kLamb: the moments were updated by the first pass
    return (c.lr * tau) * lamb_direction(c, theta, s0, s1, wd);
  }
}

// Trust ratios from per-tensor norms (double, on either side).
PB_HOST_DEVICE inline double lars_trust_ratio(double param_norm, double grad_norm, double wd,
                                              double trust_coefficient, double eps) {
  if (!(param_norm > 0.0) || !(grad_norm > 0.0)) return 1.0;
  return trust_coefficient * param_norm / (grad_norm + wd * param_norm + eps);
}
PB_HOST_DEVICE inline double lamb_trust_ratio(double param_norm, double direction_norm) {
  if (!(param_norm > 0.0) || !(direction_norm > 0.0)) return 1.0;
  return param_norm / direction_norm;
}

}  // namespace optim_detail
}  // namespace pb::kernels
