// Fully connected layer on the CPU: three GEMMs (one forward, two backward) plus bias loops.
//   x: (M,K)   w: (N,K)   b: (N)   y, dy: (M,N)
#include "kernels/linear.h"

#include "kernels/gemm.h"

namespace pb::kernels {

// y(M,N) = x(M,K) * w^T(K,N) + b
template <typename T>
void linear_forward_cpu(int64_t M, int64_t N, int64_t K, const T* x, const T* w, const T* b, T* y) {
  // Seed each row of y with the bias and let the GEMM accumulate onto it (beta = 1).
  if (b != nullptr) {
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) y[i * N + j] = b[j];
    }
  }
  const T beta = b != nullptr ? T(1) : T(0);
  gemm_cpu<T>(Trans::No, Trans::Yes, M, N, K, T(1), x, K, w, K, beta, y, N);
}

template <typename T>
void linear_backward_cpu(int64_t M, int64_t N, int64_t K, const T* x, const T* w, const T* dy,
                         T* dx, T* dw, T* db) {
  // dx(M,K) = dy(M,N) * w(N,K)
  if (dx != nullptr) gemm_cpu<T>(Trans::No, Trans::No, M, K, N, T(1), dy, N, w, K, T(0), dx, K);
  // dw(N,K) = dy^T(N,M) * x(M,K)
  if (dw != nullptr) gemm_cpu<T>(Trans::Yes, Trans::No, N, K, M, T(1), dy, N, x, K, T(0), dw, K);
  // db(N) = sum over rows of dy
  if (db != nullptr) {
    for (int64_t j = 0; j < N; ++j) db[j] = T(0);
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) db[j] += dy[i * N + j];
    }
  }
}

template void linear_forward_cpu<float>(int64_t, int64_t, int64_t, const float*, const float*,
                                        const float*, float*);
template void linear_forward_cpu<double>(int64_t, int64_t, int64_t, const double*, const double*,
                                         const double*, double*);
template void linear_backward_cpu<float>(int64_t, int64_t, int64_t, const float*, const float*,
                                         const float*, float*, float*, float*);
template void linear_backward_cpu<double>(int64_t, int64_t, int64_t, const double*, const double*,
                                          const double*, double*, double*, double*);

}  // namespace pb::kernels
