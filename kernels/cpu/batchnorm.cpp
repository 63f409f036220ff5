// CPU batch norm and ghost batch norm: the reference the CUDA/cuDNN paths are checked against.
//
// x: (N,C,L) contiguous. Channels are independent and split over the kernel thread pool
// (kernels/cpu/parallel.h); double sums run in fixed interleaved lanes (LaneSum) so the loops
// vectorise and every result is the same for any thread count. Groups are G = N / V' consecutive
// blocks of V' = min(V, N) examples; group g, channel c owns the m = V'*L values x[n, c, l] for n
// in [g*V', (g+1)*V'). Statistics use two passes (mean, then sum of squared deviations) accumulated
// in double for every T, so float inputs with a large mean do not lose the variance to
// cancellation. Each group is computed on its own, in the same order as a lone call on that group's
// slice, so a ghost-batch result equals the per-slice result bit for bit.
#include "kernels/batchnorm.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace pb::kernels {
namespace {

// Offset of x[n, c, 0] in an (N,C,L) tensor.
inline int64_t row_offset(const BatchNormShape& s, int64_t n, int64_t c) {
  return (n * s.C + c) * s.L;
}

// keep ? v : +0, as bit operations. GCC does not if-convert a floating-point select under the
// default -ftrapping-math and branches instead, mispredicting on every other element of a ReLU
// mask (that branch made the fused BN+ReLU backward ~4x slower than the plain one); an integer
// mask vectorises and gives the same bits.
template <typename T>
inline T select_or_zero(bool keep, T v) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(U));
  return std::bit_cast<T>(std::bit_cast<U>(v) & (U(0) - static_cast<U>(keep)));
}

// relu_forward's expression v < 0 ? 0 : v: a NaN stays NaN.
template <typename T>
inline T relu(T v) {
  return select_or_zero(!(v < T(0)), v);
}

// dy masked by the fused forward's output y (y > 0 ? dy : 0) when kMask.
template <bool kMask, typename T>
inline T masked_dy(const T* dy, const T* y, int64_t l) {
  if constexpr (kMask) {
    return select_or_zero(y[l] > T(0), dy[l]);
  } else {
    return dy[l];
  }
}

// Double sums in kLanes interleaved accumulators, so the compiler can vectorise a row's loop
// without reassociating floating point on its own: element l of a row goes to lane l % kLanes,
// and the lanes are added in a fixed order at the end. The order depends only on the row length,
// so one (group, channel) sums the same way whatever else is in the call (ghost groups equal
// per-slice calls bit for bit) and whatever the thread count.
constexpr int kLanes = 8;
struct LaneSum {
  double v[kLanes] = {};
  double total() const {
    double t = 0.0;
    for (double e : v) t += e;
    return t;
  }
};

// a.v[l % kLanes] += f(l) for l in [0, L), written in whole blocks of kLanes so it vectorises.
template <typename F>
inline void add_row(int64_t L, LaneSum& a, F f) {
  int64_t l = 0;
  for (; l + kLanes <= L; l += kLanes) {
    for (int j = 0; j < kLanes; ++j) a.v[j] += f(l + j);
  }
  for (int j = 0; l < L; ++l, ++j) a.v[j] += f(l);
}

// The same for two sums from one pass: f(l, da, db) sets the two terms of element l.
template <typename F>
inline void add_row2(int64_t L, LaneSum& a, LaneSum& b, F f) {
  int64_t l = 0;
  for (; l + kLanes <= L; l += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      double da, db;
      f(l + j, da, db);
      a.v[j] += da;
      b.v[j] += db;
    }
  }
  for (int j = 0; l < L; ++l, ++j) {
    double da, db;
    f(l, da, db);
    a.v[j] += da;
    b.v[j] += db;
  }
}

// Training statistics, normalisation and (fused) ReLU for channels [c0, c1) of every group.
template <typename T, bool kRelu>
void forward_train_channels(const BatchNormShape& s, int64_t c0, int64_t c1, const T* x,
                            const T* gamma, const T* beta, T eps, T momentum, T* y, T* save_mean,
                            T* save_invstd, T* running_mean, T* running_var) {
  const int64_t V = s.group_size();
  const int64_t G = s.groups();
  const int64_t L = s.L;
  const int64_t m = V * L;  // values behind one (group, channel) statistic
  // Bessel's correction for the running variance; with a single value per group the unbiased
  // variance is undefined, so the biased one (0) is used instead of poisoning it with a NaN.
  const double unbias = m > 1 ? static_cast<double>(m) / static_cast<double>(m - 1) : 1.0;
  for (int64_t c = c0; c < c1; ++c) {
    double mean_of_means = 0.0, mean_of_vars = 0.0;  // sums over groups, divided by G below
    for (int64_t g = 0; g < G; ++g) {
      // Pass 1: mean over the group's (V,L) values of channel c.
      LaneSum sum;
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        add_row(L, sum, [&](int64_t l) { return static_cast<double>(xr[l]); });
      }
      const double mean = sum.total() / static_cast<double>(m);
      // Pass 2: biased variance from squared deviations.
      LaneSum sq;
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        add_row(L, sq, [&](int64_t l) {
          const double d = static_cast<double>(xr[l]) - mean;
          return d * d;
        });
      }
      const double var = sq.total() / static_cast<double>(m);
      const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));

      const T t_mean = static_cast<T>(mean);
      const T t_invstd = static_cast<T>(invstd);
      save_mean[g * s.C + c] = t_mean;      // (G,C)
      save_invstd[g * s.C + c] = t_invstd;  // (G,C)
      mean_of_means += mean;
      mean_of_vars += var * unbias;

      // y = (x - mean) * invstd * gamma + beta, with the saved (rounded) statistics so the
      // backward pass sees exactly the xhat the forward pass used.
      const T gm = gamma ? gamma[c] : T(1);
      const T bt = beta ? beta[c] : T(0);
      for (int64_t n = g * V; n < (g + 1) * V; ++n) {
        const T* xr = x + row_offset(s, n, c);  // (L)
        T* yr = y + row_offset(s, n, c);        // (L)
        for (int64_t l = 0; l < L; ++l) {
          const T v = (xr[l] - t_mean) * t_invstd * gm + bt;
          yr[l] = kRelu ? relu(v) : v;
        }
      }
    }
    // One EMA step per call, fed with the mean over groups of the group statistics.
    const double mom = static_cast<double>(momentum);
    if (running_mean) {
      const double batch_mean = mean_of_means / static_cast<double>(G);
      running_mean[c] =
          static_cast<T>((1.0 - mom) * static_cast<double>(running_mean[c]) + mom * batch_mean);
    }
    if (running_var) {
      const double batch_var = mean_of_vars / static_cast<double>(G);
      running_var[c] =
          static_cast<T>((1.0 - mom) * static_cast<double>(running_var[c]) + mom * batch_var);
    }
  }
}

// Channels are independent: the pool splits them (kernels/cpu/parallel.h).
template <typename T, bool kRelu>
void forward_train(const BatchNormShape& s, const T* x, const T* gamma, const T* beta, T eps,
                   T momentum, T* y, T* save_mean, T* save_invstd, T* running_mean,
                   T* running_var) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) return;
  cpu::parallel_for(s.C, [&](int64_t c0, int64_t c1) {
    forward_train_channels<T, kRelu>(s, c0, c1, x, gamma, beta, eps, momentum, y, save_mean,
                                     save_invstd, running_mean, running_var);
  });
}

template <typename T, bool kRelu>
void forward_eval(const BatchNormShape& s, const T* x, const T* gamma, const T* beta,
                  const T* running_mean, const T* running_var, T eps, T* y) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) return;
  cpu::parallel_for(s.C, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
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
  });
}

// Per (group, channel), with xhat = (x - mean) * invstd and m values in the group:
//   dx = invstd / m * (m * dy * gamma - sum(dy * gamma) - xhat * sum(dy * gamma * xhat))
//      = gamma * invstd * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m)
//   dgamma = sum over all groups of sum(dy * xhat),  dbeta = sum over all groups of sum(dy).
// kMask: dy is first masked by the fused forward's output relu_y (the fused backward); the mask
// is a select inside the same vectorised loops, so the fused pass costs the plain one plus a load.
template <typename T, bool kMask>
void backward_train(const BatchNormShape& s, const T* x, const T* relu_y, const T* dy,
                    const T* gamma, const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                    T* dbeta) {
  if (s.N <= 0 || s.C <= 0 || s.L <= 0) {
    for (int64_t c = 0; c < s.C; ++c) {
      if (dgamma) dgamma[c] = T(0);
      if (dbeta) dbeta[c] = T(0);
    }
    return;
  }
  const int64_t V = s.group_size();
  const int64_t G = s.groups();
  const int64_t L = s.L;
  const double m = static_cast<double>(V * L);
  cpu::parallel_for(s.C, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double dgamma_acc = 0.0, dbeta_acc = 0.0;
      for (int64_t g = 0; g < G; ++g) {
        const T mean = save_mean[g * s.C + c];      // (G,C)
        const T invstd = save_invstd[g * s.C + c];  // (G,C)
        // Reductions over the group's (V,L) values of channel c.
        LaneSum sum_dy, sum_dy_xhat;
        for (int64_t n = g * V; n < (g + 1) * V; ++n) {
          const int64_t row = row_offset(s, n, c);
          const T* xr = x + row;                         // (L)
          const T* dyr = dy + row;                       // (L)
          const T* yr = kMask ? relu_y + row : nullptr;  // (L)
          add_row2(L, sum_dy, sum_dy_xhat, [&](int64_t l, double& d, double& d_xhat) {
            const double xhat = static_cast<double>((xr[l] - mean) * invstd);
            d = static_cast<double>(masked_dy<kMask>(dyr, yr, l));
            d_xhat = d * xhat;
          });
        }
        dgamma_acc += sum_dy_xhat.total();
        dbeta_acc += sum_dy.total();

        const double gm = gamma ? static_cast<double>(gamma[c]) : 1.0;
        const double k = gm * static_cast<double>(invstd);
        const double mean_dy = sum_dy.total() / m;
        const double mean_dy_xhat = sum_dy_xhat.total() / m;
        for (int64_t n = g * V; n < (g + 1) * V; ++n) {
          const int64_t row = row_offset(s, n, c);
          const T* xr = x + row;                         // (L)
          const T* dyr = dy + row;                       // (L)
          const T* yr = kMask ? relu_y + row : nullptr;  // (L)
          T* dxr = dx + row;                             // (L)
          for (int64_t l = 0; l < L; ++l) {
            const double xhat = static_cast<double>((xr[l] - mean) * invstd);
            const double d = static_cast<double>(masked_dy<kMask>(dyr, yr, l));
            dxr[l] = static_cast<T>(k * (d - mean_dy - xhat * mean_dy_xhat));
          }
        }
      }
      if (dgamma) dgamma[c] = static_cast<T>(dgamma_acc);
      if (dbeta) dbeta[c] = static_cast<T>(dbeta_acc);
    }
  });
}

// Statistics are constants: dx = dy * gamma * invstd with invstd = 1 / sqrt(rv + eps);
// dgamma = sum dy * xhat, dbeta = sum dy over (N,L).
template <typename T, bool kMask>
void backward_eval(const BatchNormShape& s, const T* x, const T* relu_y, const T* dy,
                   const T* gamma, const T* running_mean, const T* running_var, T eps, T* dx,
                   T* dgamma, T* dbeta) {
  cpu::parallel_for(s.C, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const T invstd = T(1) / std::sqrt(running_var[c] + eps);
      const T mean = running_mean[c];
      const T k = (gamma ? gamma[c] : T(1)) * invstd;
      LaneSum sum_dy, sum_dy_xhat;
      for (int64_t n = 0; n < s.N; ++n) {
        const int64_t row = row_offset(s, n, c);
        const T* xr = x + row;                         // (L)
        const T* dyr = dy + row;                       // (L)
        const T* yr = kMask ? relu_y + row : nullptr;  // (L)
        T* dxr = dx + row;                             // (L)
        add_row2(s.L, sum_dy, sum_dy_xhat, [&](int64_t l, double& dd, double& d_xhat) {
          const T xhat = (xr[l] - mean) * invstd;
          const T d = masked_dy<kMask>(dyr, yr, l);
          dxr[l] = d * k;
          dd = static_cast<double>(d);
          d_xhat = static_cast<double>(d) * static_cast<double>(xhat);
        });
      }
      if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat.total());
      if (dbeta) dbeta[c] = static_cast<T>(sum_dy.total());
    }
  });
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
  backward_train<T, false>(s, x, nullptr, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

template <typename T>
void batchnorm_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* dy, const T* gamma,
                                 const T* running_mean, const T* running_var, T eps, T* dx,
                                 T* dgamma, T* dbeta) {
  backward_eval<T, false>(s, x, nullptr, dy, gamma, running_mean, running_var, eps, dx, dgamma,
                          dbeta);
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
  backward_train<T, true>(s, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

template <typename T>
void batchnorm_relu_backward_eval_cpu(const BatchNormShape& s, const T* x, const T* y, const T* dy,
                                      const T* gamma, const T* running_mean, const T* running_var,
                                      T eps, T* dx, T* dgamma, T* dbeta) {
  backward_eval<T, true>(s, x, y, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
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
