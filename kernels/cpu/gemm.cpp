// Row-major GEMM on the CPU: C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C(M,N).
//
// float is handed to OpenBLAS (cblas_sgemm, CblasRowMajor): it is the hot path of the CPU trainer
// (linear layers and im2col convolutions). double runs gemm_reference, the plain loops below: it
// only serves gradcheck and test oracles, where being obviously right matters more than speed.
#include "kernels/gemm.h"

#include "kernels/cpu/parallel.h"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace pb::kernels {
namespace {

// op(X)(row, col) for a matrix stored row-major with row stride ld, transposed when t == Yes.
template <typename T>
inline T op_at(const T* X, int64_t ld, Trans t, int64_t row, int64_t col) {
  return t == Trans::No ? X[row * ld + col] : X[col * ld + row];
}

void check_shape(const char* who, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                 int64_t ldb, int64_t ldc) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string(who) + ": " + what + " (M=" + std::to_string(M) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                                " ldc=" + std::to_string(ldc) + ")");
  };
  if (M < 0 || N < 0 || K < 0) fail("negative dimension");
  // Row length of A and B as stored; see gemm.h.
  const int64_t a_cols = ta == Trans::No ? K : M;
  const int64_t b_cols = tb == Trans::No ? N : K;
  if (lda < a_cols) fail("lda is smaller than a row of A");
  if (ldb < b_cols) fail("ldb is smaller than a row of B");
  if (ldc < N) fail("ldc is smaller than a row of C");
}

// A GEMM is split across the kernel pool only when each block keeps at least this many rows or
// columns on the split side and this many FLOPs: below that, waking a thread costs more than it
// saves.
constexpr int64_t kMinSplitSide = 32;
constexpr int64_t kMinSplitFlops = int64_t(1) << 20;

// OpenBLAS runs single-threaded inside playbook: the kernel pool (kernels/cpu/parallel.h) is the
// one set of threads, and splits GEMMs itself. OpenBLAS's own pthreads spin in sched_yield for
// about 2^28 cycles after every call before they sleep (its THREAD_TIMEOUT), which on a small
// machine took a third of the CPU away from the convolution lowering and batch norm running
// between GEMMs. Called before every sgemm; the library call happens once.
void single_threaded_openblas() {
  static const bool once = (openblas_set_num_threads(1), true);
  (void)once;
}

// C(M,N) = beta * C, with beta == 0 writing zeros without reading C.
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      for (int64_t j = 0; j < N; ++j) c[j] = T(0);
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

}  // namespace

template <typename T>
void gemm_reference(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  check_shape("gemm_reference", ta, tb, M, N, K, lda, ldb, ldc);
  // Loop order i-k-j: the innermost loop walks a row of C (and, untransposed, a row of B)
  // contiguously.
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;  // row i of C, (N)
    scale_c(1, N, beta, c, ldc);
    if (alpha == T(0)) continue;  // BLAS semantics: A and B are not read
    for (int64_t k = 0; k < K; ++k) {
      const T a_ik = alpha * op_at(A, lda, ta, i, k);
      for (int64_t j = 0; j < N; ++j) c[j] += a_ik * op_at(B, ldb, tb, k, j);
    }
  }
}

template <typename T>
void gemm_cpu(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (!std::is_same_v<T, float>) {
    gemm_reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    check_shape("gemm_cpu<float>", ta, tb, M, N, K, lda, ldb, ldc);
    if (M == 0 || N == 0) return;
    // Nothing to multiply: C = beta * C. Handled here because BLAS rejects a leading dimension of
    // 0, which an operand with no columns legitimately has.
    if (K == 0 || alpha == 0.0f) {
      scale_c(M, N, beta, C, ldc);
      return;
    }
    constexpr int64_t kMax = std::numeric_limits<blasint>::max();
    if (M > kMax || N > kMax || K > kMax || lda > kMax || ldb > kMax || ldc > kMax) {
      throw std::invalid_argument(
          "gemm_cpu<float>: a dimension or leading dimension exceeds the BLAS integer range (M=" +
          std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + ")");
    }
    // Reference BLAS semantics: beta == 0 means C need not be set on input, so NaNs in C are
    // overwritten (tests/kernels/test_gemm.cpp checks that OpenBLAS honours this).
    single_threaded_openblas();
    const auto blas_trans = [](Trans t) { return t == Trans::Yes ? CblasTrans : CblasNoTrans; };
    const auto sgemm = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      // Rows [m0,m1) of op(A) and C, columns [n0,n1) of op(B) and C.
      const float* a = A + (ta == Trans::No ? m0 * lda : m0);
      const float* b = B + (tb == Trans::No ? n0 : n0 * ldb);
      cblas_sgemm(CblasRowMajor, blas_trans(ta), blas_trans(tb), static_cast<blasint>(m1 - m0),
                  static_cast<blasint>(n1 - n0), static_cast<blasint>(K), alpha, a,
                  static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, C + m0 * ldc + n0,
                  static_cast<blasint>(ldc));
    };
    // The kernel pool splits the longer side of C into one block per thread (each block a
    // single-threaded OpenBLAS call); a GEMM too small to share runs on the calling thread.
    const int threads = cpu::cpu_kernel_threads();
    const bool split_n = N >= M;
    const int64_t side = split_n ? N : M;
    const int64_t parts = std::min<int64_t>(
        {threads, side / kMinSplitSide, std::max<int64_t>(1, 2 * M * N * K / kMinSplitFlops)});
    if (parts <= 1) {
      sgemm(0, M, 0, N);
      return;
    }
    cpu::parallel_for(parts, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int64_t lo = side * part / parts, hi = side * (part + 1) / parts;
        if (split_n) {
          sgemm(0, M, lo, hi);
        } else {
          sgemm(lo, hi, 0, N);
        }
      }
    });
  }
}

template void gemm_reference<float>(Trans, Trans, int64_t, int64_t, int64_t, float, const float*,
                                    int64_t, const float*, int64_t, float, float*, int64_t);
template void gemm_reference<double>(Trans, Trans, int64_t, int64_t, int64_t, double, const double*,
                                     int64_t, const double*, int64_t, double, double*, int64_t);
template void gemm_cpu<float>(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t,
                              const float*, int64_t, float, float*, int64_t);
template void gemm_cpu<double>(Trans, Trans, int64_t, int64_t, int64_t, double, const double*,
                               int64_t, const double*, int64_t, double, double*, int64_t);

}  // namespace pb::kernels

namespace pb::kernels {

std::string cpu_blas_info() {
  return std::string(openblas_get_config()) + ", core " + openblas_get_corename() +
         ", single-threaded calls split over playbook's " +
         std::to_string(cpu::cpu_kernel_threads()) + " kernel thread(s)";
}

}  // namespace pb::kernels

namespace pb::kernels {

void set_cpu_blas_threads(int threads) {
  single_threaded_openblas();
  cpu::set_cpu_kernel_threads(threads);  // GEMM blocks, lowering and batch norm, kernels/cpu
}

}  // namespace pb::kernels
