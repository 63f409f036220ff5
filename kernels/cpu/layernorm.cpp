// CPU layer norm over the last dimension of x: (M,D). Each row's mean and biased variance are
// computed in two passes accumulated in double, as in batchnorm.cpp.
#include "kernels/layernorm.h"

#include <cmath>
#include <vector>

namespace pb::kernels {

template <typename T>
void layernorm_forward_cpu(int64_t M, int64_t D, const T* x, const T* gamma, const T* beta, T eps,
                           T* y, T* save_mean, T* save_invstd) {
  if (D <= 0) return;
  for (int64_t i = 0; i < M; ++i) {
    const T* xr = x + i * D;  // (D)
    T* yr = y + i * D;        // (D)
    double sum = 0.0;
    for (int64_t j = 0; j < D; ++j) sum += static_cast<double>(xr[j]);
    const double mean = sum / static_cast<double>(D);
    double sq = 0.0;
    for (int64_t j = 0; j < D; ++j) {
      const double d = static_cast<double>(xr[j]) - mean;
      sq += d * d;
    }
    const double var = sq / static_cast<double>(D);
    const T t_mean = static_cast<T>(mean);
    const T t_invstd = static_cast<T>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    save_mean[i] = t_mean;      // (M)
    save_invstd[i] = t_invstd;  // (M)
    for (int64_t j = 0; j < D; ++j) {
      const T gm = gamma ? gamma[j] : T(1);
      const T bt = beta ? beta[j] : T(0);
      yr[j] = (xr[j] - t_mean) * t_invstd * gm + bt;
    }
  }
}

// Per row, with xhat = (x - mean) * invstd and g = dy * gamma:
//   dx = invstd * (g - mean_j(g) - xhat * mean_j(g * xhat))
//   dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy.
template <typename T>
void layernorm_backward_cpu(int64_t M, int64_t D, const T* x, const T* dy, const T* gamma,
                            const T* save_mean, const T* save_invstd, T* dx, T* dgamma, T* dbeta) {
  if (D <= 0) return;
  std::vector<double> dgamma_acc(D, 0.0);  // (D)
  std::vector<double> dbeta_acc(D, 0.0);   // (D)
  for (int64_t i = 0; i < M; ++i) {
    const T* xr = x + i * D;    // (D)
    const T* dyr = dy + i * D;  // (D)
    T* dxr = dx + i * D;        // (D)
    const T mean = save_mean[i];
    const T invstd = save_invstd[i];
    double sum_g = 0.0, sum_g_xhat = 0.0;
    for (int64_t j = 0; j < D; ++j) {
      const double xhat = static_cast<double>((xr[j] - mean) * invstd);
      const double g = static_cast<double>(dyr[j]) * (gamma ? static_cast<double>(gamma[j]) : 1.0);
      sum_g += g;
      sum_g_xhat += g * xhat;
      dgamma_acc[j] += static_cast<double>(dyr[j]) * xhat;
      dbeta_acc[j] += static_cast<double>(dyr[j]);
    }
    const double mean_g = sum_g / static_cast<double>(D);
    const double mean_g_xhat = sum_g_xhat / static_cast<double>(D);
    for (int64_t j = 0; j < D; ++j) {
      const double xhat = static_cast<double>((xr[j] - mean) * invstd);
      const double g = static_cast<double>(dyr[j]) * (gamma ? static_cast<double>(gamma[j]) : 1.0);
      dxr[j] = static_cast<T>(static_cast<double>(invstd) * (g - mean_g - xhat * mean_g_xhat));
    }
  }
  for (int64_t j = 0; j < D; ++j) {
    if (dgamma) dgamma[j] = static_cast<T>(dgamma_acc[j]);
    if (dbeta) dbeta[j] = static_cast<T>(dbeta_acc[j]);
  }
}

#define PB_INSTANTIATE_LAYERNORM(T)                                                             \
  template void layernorm_forward_cpu<T>(int64_t, int64_t, const T*, const T*, const T*, T, T*, \
                                         T*, T*);                                               \
  template void layernorm_backward_cpu<T>(int64_t, int64_t, const T*, const T*, const T*,       \
                                          const T*, const T*, T*, T*, T*);

PB_INSTANTIATE_LAYERNORM(float)
PB_INSTANTIATE_LAYERNORM(double)
#undef PB_INSTANTIATE_LAYERNORM

}  // namespace pb::kernels
