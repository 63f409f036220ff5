// CPU batch norm and ghost batch norm: the reference the CUDA/cuDNN paths are checked against.
//
// x: (N,C,L) contiguous. Groups are G = N / V' consecutive blocks of V' = min(V, N) examples;
// group g, channel c owns the m = V'*L values x[n, c, l] for n in [g*V', (g+1)*V').
// Statistics use two passes (mean, then sum of squared deviations) accumulated in double for
// every T, so float inputs with a large mean do not lose the variance to cancellation. Each
// group is computed on its own, in the same order as a lone call on that group's slice, so a
// ghost-batch result equals the per-slice result bit for bit.
#include "kernels/batchnorm.h"

#include <cmath>
#include <vector>

namespace pb::kernels {
namespace {

// Offset of x[n, c, 0] in an (N,C,L) tensor.
inline int64_t row_offset(const BatchNormShape& s, int64_t n, int64_t c) {
  return (n * s.C + c) * s.L;
}

// relu_forward's expression: a NaN stays NaN.
template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// dy masked by the fused forward's output y (y > 0 ? dy : 0); plain dy when y is null.
template <typename T>
inline T masked_dy(const T* dy, const T* y, int64_t i) {
  return y == nullptr || y[i] > T(0) ? dy[i] : T(0);
}

template <typename T, bool kRelu>
void forward_train(const BatchNormShape& s, const T* x, const T* gamma, const T* beta, T eps,
                   T momentum, T* y, T* save_mean, T* save_invstd, T* running_mean,
                   T* running_var) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) return;
  const int64_t V = s.group_size();
  const int64_t G = s.groups();
  const int64_t m = V * s.L;  // values behind one (group, channel) statistic
  // Bessel's correction for the running variance; with a single value per group the unbiased
  // variance is undefined, so the biased one (0) is used instead of poisoning it with a NaN.
  const double unbias = m > 1 ? static_cast<double>(m) / static_cast<double>(m - 1) : 1.0;

  std::vector<double> mean_of_means(s.C, 0.0);  // (C) sum over groups, divided by G below
  std::vector<double> mean_of_vars(s.C, 0.0);   // (C)

  for (int64_t g = 0; g < G; ++g) {
    for (int64_t c = 0; c < s.C; ++c) {
      // Pass 1: mean over the group's (V,L) values of channel c.
      double sum = 0.0;
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        for (int64_t l = 0; l < s.L; ++l) sum += static_cast<double>(xr[l]);
      }
      const double mean = sum / static_cast<double>(m);
      // Pass 2: biased variance from squared deviations.
      double sq = 0.0;
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        for (int64_t l = 0; l < s.L; ++l) {
          const double d = static_cast<double>(xr[l]) - mean;
          sq += d * d;
        }
      }
      const double var = sq / static_cast<double>(m);
      const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));

      const T t_mean = static_cast<T>(mean);
      const T t_invstd = static_cast<T>(invstd);
      save_mean[g * s.C + c] = t_mean;      // (G,C)
      save_invstd[g * s.C + c] = t_invstd;  // (G,C)
      mean_of_means[c] += mean;
      mean_of_vars[c] += var * unbias;

      // y = (x - mean) * invstd * gamma + beta, with the saved (rounded) statistics so the
      // backward pass sees exactly the xhat the forward pass used.
      const T gm = gamma ? gamma[c] : T(1);
      const T bt = beta ? beta[c] : T(0);
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        T* yr = y + row_offset(s, n, c);        // (L)
        for (int64_t l = 0; l < s.L; ++l) {
          const T v = (xr[l] - t_mean) * t_invstd * gm + bt;
          yr[l] = kRelu ? relu(v) : v;
        }
      }
    }
  }

  // One EMA step per call, fed with the mean over groups of the group statistics.
  const double mom = static_cast<double>(momentum);
  for (int64_t c = 0; c < s.C; ++c) {
    if (running_mean) {
      const double batch_mean = mean_of_means[c] / static_cast<double>(G);
      running_mean[c] =
          static_cast<T>((1.0 - mom) * static_cast<double>(running_mean[c]) + mom * batch_mean);
    }
    if (running_var) {
      const double batch_var = mean_of_vars[c] / static_cast<double>(G);
      running_var[c] =
          static_cast<T>((1.0 - mom) * static_cast<double>(running_var[c]) + mom * batch_var);
    }
  }
}

template <typename T, bool kRelu>
void forward_eval(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                  const T* running_mean, const T* running_var, T eps, T* y) {
  for (int64_t c = 0; c < s.C; ++c) {
    const T invstd = T(1) / std::sqrt(running_var[c] + eps);
    const T mean = running_mean[c];
    const T gm = gamma ? gamma[c] : T(1);
    const T bt = beta ? beta[c] : T(0);
    for (int64_t n = 0; n < s.N; ++n) {
      const T* xr = x + row_offset(s, n, c);  // (L)
      T* yr = y + row_offset(s, n, c);        // (L)
      for (int64_t l = 0; l < s.L; ++l) {
        const T v = (xr[l] - mean) * invstd * gm + bt;
        yr[l] = kRelu ? relu(v) : v;
      }
    }
  }
}

// Per (group, channel), with xhat = (x - mean) * invstd and m values in the group:
//   dx = invstd / m * (m * dy * gamma - sum(dy * gamma) - xhat * sum(dy * gamma * xhat))
//      = gamma * invstd * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m)
//   dgamma = sum over all groups of sum(dy * xhat),  dbeta = sum over all groups of sum(dy).
// relu_y: the fused forward's output masking dy, or nullptr.
template <typename T>
void backward_train(const BatchNormShape& s, const T* x, const T* relu_y, const T* dy,
                    const T* gamma, const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                    T* dbeta) {
  std::vector<double> dgamma_acc(s.C > 0 ? s.C : 0, 0.0);  // (C)
  std::vector<double> dbeta_acc(s.C > 0 ? s.C : 0, 0.0);   // (C)
  if (s.N > 0 && s.C > 0 && s.L > 0) {
    const int64_t V = s.group_size();
    const int64_t G = s.groups();
    const double m = static_cast<double>(V * s.L);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t c = 0; c < s.C; ++c) {
        const T mean = save_mean[g * s.C + c];      // (G,C)
        const T invstd = save_invstd[g * s.C + c];  // (G,C)
        // Reductions over the group's (V,L) values of channel c.
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t n = g * V; n < (g + 1) * V; ++n) {
          const T* xr = x + row_offset(s, n, c);    // (L)
          const int64_t row = row_offset(s, n, c);  // (L)
          for (int64_t l = 0; l < s.L; ++l) {
            const double xhat = static_cast<double>((xr[l] - mean) * invstd);
            const double d = static_cast<double>(masked_dy(dy, relu_y, row + l));
            sum_dy += d;
            sum_dy_xhat += d * xhat;
          }
        }
        dgamma_acc[c] += sum_dy_xhat;
        dbeta_acc[c] += sum_dy;

        const double gm = gamma ? static_cast<double>(gamma[c]) : 1.0;
        const double k = gm * static_cast<double>(invstd);
        const double mean_dy = sum_dy / m;
        const double mean_dy_xhat = sum_dy_xhat / m;
        for (int64_t n = g * V; n < (g + 1) * V; ++n) {
          const T* xr = x + row_offset(s, n, c);  // (L)
          T* dxr = dx + row_offset(s, n, c);      // (L)
          const int64_t row = row_offset(s, n, c);
          for (int64_t l = 0; l < s.L; ++l) {
            const double xhat = static_cast<double>((xr[l] - mean) * invstd);
            const double d = static_cast<double>(masked_dy(dy, relu_y, row + l));
            dxr[l] = static_cast<T>(k * (d - mean_dy - xhat * mean_dy_xhat));
          }
        }
      }
    }
  }
  for (int64_t c = 0; c < s.C; ++c) {
    if (dgamma) dgamma[c] = static_cast<T>(dgamma_acc[c]);
    if (dbeta) dbeta[c] = static_cast<T>(dbeta_acc[c]);
  }
}

// Statistics are constants: dx = dy * gamma * invstd with invstd = 1 / sqrt(rv + eps);
// dgamma = sum dy * xhat, dbeta = sum dy over (N,L).
template <typename T>
void backward_eval(const BatchNormShape& s, const T* x, const T* relu_y, const T* dy,
                   const T* gamma, const T* running_mean, const T* running_var, T eps, T* dx,
                   T* dgamma, T* dbeta) {
  for (int64_t c = 0; c < s.C; ++c) {
    const T invstd = T(1) / std::sqrt(running_var[c] + eps);
    const T mean = running_mean[c];
    const T k = (gamma ? gamma[c] : T(1)) * invstd;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (int64_t n = 0; n < s.N; ++n) {
      const T* xr = x + row_offset(s, n, c);  // (L)
      T* dxr = dx + row_offset(s, n, c);      // (L)
      const int64_t row = row_offset(s, n, c);
      for (int64_t l = 0; l < s.L; ++l) {
        const T xhat = (xr[l] - mean) * invstd;
        const T d = masked_dy(dy, relu_y, row + l);
        sum_dy += static_cast<double>(d);
        sum_dy_xhat += static_cast<double>(d) * static_cast<double>(xhat);
        dxr[l] = d * k;
      }
    }
    if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
  }
}

}  // namespace

template <typename T>
void batchnorm_forward_train_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                                 T eps, T momentum, T* y, T* save_mean, T* save_invstd,
                                 T* running_mean, T* running_var) {
  forward_train<T, false>(s, x, gamma, beta, eps, momentum, y, save_mean, save_invstd, running_mean,
                          running_var);
}

template <typename T>
void batchnorm_forward_eval_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                                const T* running_mean, const T* running_var, T eps, T* y) {
  forward_eval<T, false>(s, x, gamma, beta, running_mean, running_var, eps, y);
}

template <typename T>
void batchnorm_backward_train_cpu(const BatchNormShape& s, const T* x, const T* dy, const T* gamma,
                                  const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                                  T* dbeta) {
  backward_train<T>(s, x, nullptr, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

template <typename T>
void batchnorm_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* dy, const T* gamma,
                                 const T* running_mean, const T* running_var, T eps, T* dx,
                                 T* dgamma, T* dbeta) {
  backward_eval<T>(s, x, nullptr, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
}

template <typename T>
void batchnorm_relu_forward_train_cpu(const BatchNormShape& s, const T* x, const T* gamma,
                                      const T* beta, T eps, T momentum, T* y, T* save_mean,
                                      T* save_invstd, T* running_mean, T* running_var) {
  forward_train<T, true>(s, x, gamma, beta, eps, momentum, y, save_mean, save_invstd, running_mean,
                         running_var);
}

template <typename T>
void batchnorm_relu_forward_eval_cpu(const BatchNormShape& s, const T* x, const T* gamma,
                                     const T* beta, const T* running_mean, const T* running_var,
                                     T eps, T* y) {
  forward_eval<T, true>(s, x, gamma, beta, running_mean, running_var, eps, y);
}

template <typename T>
void batchnorm_relu_backward_train_cpu(const BatchNormShape& s, const T* x, const T* y, const T* dy,
                                       const T* gamma, const T* save_mean, const T* save_invstd,
                                       T* dx, T* dgamma, T* dbeta) {
  backward_train<T>(s, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

template <typename T>
void batchnorm_relu_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* y, const T* dy,
                                      const T* gamma, const T* running_mean, const T* running_var,
                                      T eps, T* dx, T* dgamma, T* dbeta) {
  backward_eval<T>(s, x, y, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
}

#define PB_INSTANTIATE_BATCHNORM(T)                                                                \
  template void batchnorm_forward_train_cpu<T>(const BatchNormShape&, const T*, const T*,          \
                                               const T*, T, T, T*, T*, T*, T*, T*);                \
  template void batchnorm_forward_eval_cpu<T>(const BatchNormShape&, const T*, const T*, const T*, \
                                              const T*, const T*, T, T*);                          \
  template void batchnorm_backward_train_cpu<T>(const BatchNormShape&, const T*, const T*,         \
                                                const T*, const T*, const T*, T*, T*, T*);         \
  template void batchnorm_backward_eval_cpu<T>(const BatchNormShape&, const T*, const T*,          \
                                               const T*, const T*, const T*, T, T*, T*, T*);       \
  template void batchnorm_relu_forward_train_cpu<T>(const BatchNormShape&, const T*, const T*,     \
                                                    const T*, T, T, T*, T*, T*, T*, T*);           \
  template void batchnorm_relu_forward_eval_cpu<T>(const BatchNormShape&, const T*, const T*,      \
                                                   const T*, const T*, const T*, T, T*);           \
  template void batchnorm_relu_backward_train_cpu<T>(const BatchNormShape&, const T*, const T*,    \
                                                     const T*, const T*, const T*, const T*, T*,   \
                                                     T*, T*);                                      \
  template void batchnorm_relu_backward_eval_cpu<T>(const BatchNormShape&, const T*, const T*,     \
                                                    const T*, const T*, const T*, const T*, T, T*, \
                                                    T*, T*);

PB_INSTANTIATE_BATCHNORM(float)
PB_INSTANTIATE_BATCHNORM(double)
#undef PB_INSTANTIATE_BATCHNORM

}  // namespace pb::kernels
