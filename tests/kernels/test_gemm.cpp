// gemm_cpu / gemm_reference: hand-computed products, then every transpose combination on odd
// shapes and padded leading dimensions against a naive dot-product GEMM written here in double.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/gemm.h"

namespace pb::kernels {
namespace {

// A matrix stored row-major in a buffer whose rows are `ld` long (ld >= cols); the padding holds a
// sentinel so that writes outside the matrix can be caught.
template <typename T>
struct Strided {
  int64_t rows, cols, ld;
  std::vector<T> data;
  Strided(int64_t r, int64_t c, int64_t pad, T fill = T(0))
      : rows(r), cols(c), ld(c + pad), data(static_cast<size_t>(r * (c + pad)), fill) {}
  T& at(int64_t i, int64_t j) { return data[static_cast<size_t>(i * ld + j)]; }
  T at(int64_t i, int64_t j) const { return data[static_cast<size_t>(i * ld + j)]; }
};

constexpr double kSentinel = 12345.0;

template <typename T>
Strided<T> random_matrix(int64_t rows, int64_t cols, int64_t pad, std::mt19937& rng) {
  Strided<T> m(rows, cols, pad, T(kSentinel));
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) m.at(i, j) = static_cast<T>(dist(rng));
  }
  return m;
}

// The oracle: each C(i,j) as an explicit dot product in double, with its error scale
// sum_k |alpha * a_ik * b_kj| + |beta * c_ij| for tolerances.
struct Expected {
  std::vector<double> value, scale;  // (M,N)
};
template <typename T>
Expected naive_gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha,
                    const Strided<T>& A, const Strided<T>& B, double beta, const Strided<T>& C) {
  Expected e{std::vector<double>(static_cast<size_t>(M * N)),
             std::vector<double>(static_cast<size_t>(M * N))};
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0.0, abs_dot = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta == Trans::No ? A.at(i, k) : A.at(k, i);
        const double b = tb == Trans::No ? B.at(k, j) : B.at(j, k);
        dot += a * b;
        abs_dot += std::fabs(a * b);
      }
      const double c = beta == 0.0 ? 0.0 : static_cast<double>(C.at(i, j));
      e.value[static_cast<size_t>(i * N + j)] = alpha * dot + beta * c;
      e.scale[static_cast<size_t>(i * N + j)] = std::fabs(alpha) * abs_dot + std::fabs(beta * c);
    }
  }
  return e;
}

// Runs one randomized case through gemm function `fn` of scalar type T and checks every element of
// C, plus that the padding of C is untouched.
template <typename T, typename Fn>
void check_random_case(Fn fn, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t pad,
                       double alpha, double beta, double rel_tol, unsigned seed) {
  SCOPED_TRACE(::testing::Message() << "ta=" << (ta == Trans::Yes) << " tb=" << (tb == Trans::Yes)
                                    << " M=" << M << " N=" << N << " K=" << K << " pad=" << pad
                                    << " alpha=" << alpha << " beta=" << beta);
  std::mt19937 rng(seed);
  const auto A =
      ta == Trans::No ? random_matrix<T>(M, K, pad, rng) : random_matrix<T>(K, M, pad + 1, rng);
  const auto B =
      tb == Trans::No ? random_matrix<T>(K, N, pad + 2, rng) : random_matrix<T>(N, K, pad, rng);
  auto C = random_matrix<T>(M, N, pad + 3, rng);
  const Expected e = naive_gemm(ta, tb, M, N, K, alpha, A, B, beta, C);
  fn(ta, tb, M, N, K, T(alpha), A.data.data(), A.ld, B.data.data(), B.ld, T(beta), C.data.data(),
     C.ld);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      const size_t ij = static_cast<size_t>(i * N + j);
      ASSERT_NEAR(C.at(i, j), e.value[ij], rel_tol * (e.scale[ij] + 1e-30))
          << "at " << i << "," << j;
    }
    for (int64_t j = N; j < C.ld; ++j) ASSERT_EQ(C.at(i, j), T(kSentinel)) << "padding written";
  }
}

const Trans kBoth[] = {Trans::No, Trans::Yes};

struct Dims {
  int64_t M, N, K;
};
const Dims kOddShapes[] = {{1, 1, 1}, {7, 5, 3}, {3, 7, 5}, {33, 17, 65}, {2, 64, 1}, {65, 1, 9}};

// ---- hand-computed values ----------------------------------------------------------------------

// A = [1 2 3; 4 5 6] (2x3), B = [7 8; 9 10; 11 12] (3x2):
//   A*B = [1*7+2*9+3*11  1*8+2*10+3*12; 4*7+5*9+6*11  4*8+5*10+6*12] = [58 64; 139 154]
// Each transpose combination stores A and/or B transposed and must give the same product.
template <typename T>
void check_hand_computed(void (*fn)(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t,
                                    const T*, int64_t, T, T*, int64_t)) {
  const T a[] = {1, 2, 3, 4, 5, 6};       // (2,3)
  const T a_t[] = {1, 4, 2, 5, 3, 6};     // (3,2) = A^T
  const T b[] = {7, 8, 9, 10, 11, 12};    // (3,2)
  const T b_t[] = {7, 9, 11, 8, 10, 12};  // (2,3) = B^T
  const T expected[] = {58, 64, 139, 154};
  for (Trans ta : kBoth) {
    for (Trans tb : kBoth) {
      T c[4] = {-1, -1, -1, -1};
      fn(ta, tb, 2, 2, 3, T(1), ta == Trans::No ? a : a_t, ta == Trans::No ? 3 : 2,
         tb == Trans::No ? b : b_t, tb == Trans::No ? 2 : 3, T(0), c, 2);
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(c[i], expected[i])
            << "ta=" << (ta == Trans::Yes) << " tb=" << (tb == Trans::Yes) << " element " << i;
      }
    }
  }
  // alpha and beta: C = 2*A*B - 1*C0 with C0 = [1 2; 3 4] -> [115 126; 275 304]
  T c[4] = {1, 2, 3, 4};
  fn(Trans::No, Trans::No, 2, 2, 3, T(2), a, 3, b, 2, T(-1), c, 2);
  EXPECT_EQ(c[0], T(115));
  EXPECT_EQ(c[1], T(126));
  EXPECT_EQ(c[2], T(275));
  EXPECT_EQ(c[3], T(304));
}

TEST(GemmCpu, HandComputedFloat) {
  check_hand_computed<float>(&gemm_cpu<float>);
}
TEST(GemmCpu, HandComputedDouble) {
  check_hand_computed<double>(&gemm_cpu<double>);
}
TEST(GemmCpu, HandComputedReferenceFloat) {
  check_hand_computed<float>(&gemm_reference<float>);
}

// ---- randomized, against the naive oracle ------------------------------------------------------

TEST(GemmCpu, FloatAllTransposesOddShapesPaddedLd) {
  unsigned seed = 1;
  for (const Dims& d : kOddShapes) {
    for (Trans ta : kBoth) {
      for (Trans tb : kBoth) {
        for (int64_t pad : {0, 3}) {
          check_random_case<float>(&gemm_cpu<float>, ta, tb, d.M, d.N, d.K, pad, 1.0, 0.0, 1e-5,
                                   seed++);
          check_random_case<float>(&gemm_cpu<float>, ta, tb, d.M, d.N, d.K, pad, -0.5, 0.75, 1e-5,
                                   seed++);
        }
      }
    }
  }
}

TEST(GemmCpu, DoubleAllTransposesOddShapesPaddedLd) {
  unsigned seed = 100;
  for (const Dims& d : kOddShapes) {
    for (Trans ta : kBoth) {
      for (Trans tb : kBoth) {
        for (int64_t pad : {0, 3}) {
          check_random_case<double>(&gemm_cpu<double>, ta, tb, d.M, d.N, d.K, pad, 1.0, 0.0, 1e-13,
                                    seed++);
          check_random_case<double>(&gemm_cpu<double>, ta, tb, d.M, d.N, d.K, pad, 1.5, -2.0, 1e-13,
                                    seed++);
        }
      }
    }
  }
}

// A shape large enough for OpenBLAS to take its blocked path, split across the kernel threads.
TEST(GemmCpu, FloatLargeShape) {
  check_random_case<float>(&gemm_cpu<float>, Trans::No, Trans::Yes, 130, 257, 300, 1, 1.0, 1.0,
                           1e-5, 7);
  check_random_case<float>(&gemm_cpu<float>, Trans::Yes, Trans::No, 257, 130, 300, 0, 1.0, 0.0,
                           1e-5, 8);
}

// gemm_cpu<float> splits a large C into one block per kernel thread, along N when N >= M and
// along M otherwise, each block a single-threaded OpenBLAS call on offset views of A, B and C.
// Every transpose combination, both split directions and padded leading dimensions, with 1, 2
// and 3 threads (3 gives uneven blocks), against the naive oracle; the padding of C stays
// untouched.
TEST(GemmCpu, FloatSplitAcrossKernelThreadsMatchesOracle) {
  unsigned seed = 300;
  for (int threads : {1, 2, 3}) {
    set_cpu_blas_threads(threads);
    SCOPED_TRACE(::testing::Message() << "threads=" << threads);
    for (const Dims& d : {Dims{70, 301, 97}, Dims{301, 70, 97}}) {
      for (Trans ta : kBoth) {
        for (Trans tb : kBoth) {
          check_random_case<float>(&gemm_cpu<float>, ta, tb, d.M, d.N, d.K, 5, 0.5, -1.5, 1e-5,
                                   seed++);
        }
      }
    }
  }
  set_cpu_blas_threads(static_cast<int>(std::thread::hardware_concurrency()) > 0
                           ? static_cast<int>(std::thread::hardware_concurrency())
                           : 1);
}

// sgemm on float inputs against gemm_reference<double> on the same values widened to double.
TEST(GemmCpu, SgemmMatchesDoubleReference) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (Trans ta : kBoth) {
    for (Trans tb : kBoth) {
      const int64_t M = 33, N = 17, K = 65;
      std::vector<float> a(M * K), b(K * N), c(M * N, std::numeric_limits<float>::quiet_NaN());
      for (float& v : a) v = dist(rng);
      for (float& v : b) v = dist(rng);
      const std::vector<double> a_d(a.begin(), a.end()), b_d(b.begin(), b.end());
      std::vector<double> c_d(M * N);
      const int64_t lda = ta == Trans::No ? K : M, ldb = tb == Trans::No ? N : K;
      gemm_cpu<float>(ta, tb, M, N, K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), N);
      gemm_reference<double>(ta, tb, M, N, K, 1.0, a_d.data(), lda, b_d.data(), ldb, 0.0,
                             c_d.data(), N);
      for (int64_t i = 0; i < M * N; ++i) {
        // |entries| <= 1 and K = 65 terms: the float result is within K * eps of the double one.
        ASSERT_NEAR(c[i], c_d[i], 65 * 1.2e-7)
            << "ta=" << (ta == Trans::Yes) << " tb=" << (tb == Trans::Yes) << " i=" << i;
      }
    }
  }
}

// ---- beta semantics and degenerate shapes ------------------------------------------------------

template <typename T>
void check_beta_zero_overwrites_nan(void (*fn)(Trans, Trans, int64_t, int64_t, int64_t, T, const T*,
                                               int64_t, const T*, int64_t, T, T*, int64_t)) {
  for (Trans ta : kBoth) {
    for (Trans tb : kBoth) {
      // A = all 1 (4x3), B = all 2 (3x5): every entry of A*B is 3 * 1 * 2 = 6.
      const std::vector<T> a(12, T(1)), b(15, T(2));
      std::vector<T> c(4 * 7, std::numeric_limits<T>::quiet_NaN());  // ldc = 7 > N = 5
      fn(ta, tb, 4, 5, 3, T(1), a.data(), ta == Trans::No ? 3 : 4, b.data(),
         tb == Trans::No ? 5 : 3, T(0), c.data(), 7);
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 5; ++j) EXPECT_EQ(c[i * 7 + j], T(6)) << i << "," << j;
        for (int j = 5; j < 7; ++j) EXPECT_TRUE(std::isnan(c[i * 7 + j])) << "padding written";
      }
    }
  }
}

TEST(GemmCpu, BetaZeroOverwritesNanFloat) {
  check_beta_zero_overwrites_nan<float>(&gemm_cpu);
}
TEST(GemmCpu, BetaZeroOverwritesNanDouble) {
  check_beta_zero_overwrites_nan<double>(&gemm_cpu);
}

TEST(GemmCpu, BetaOneAccumulates) {
  // C0 = [10 20; 30 40]; A = I (2x2); B = [1 2; 3 4]  ->  C = C0 + B = [11 22; 33 44], twice more
  // gives C0 + 3B.
  const float a[] = {1, 0, 0, 1}, b[] = {1, 2, 3, 4};
  float c[] = {10, 20, 30, 40};
  for (int rep = 0; rep < 3; ++rep)
    gemm_cpu<float>(Trans::No, Trans::No, 2, 2, 2, 1.0f, a, 2, b, 2, 1.0f, c, 2);
  EXPECT_EQ(c[0], 13.0f);
  EXPECT_EQ(c[1], 26.0f);
  EXPECT_EQ(c[2], 39.0f);
  EXPECT_EQ(c[3], 52.0f);
  double cd[] = {10, 20, 30, 40};
  const double ad[] = {1, 0, 0, 1}, bd[] = {1, 2, 3, 4};
  gemm_cpu<double>(Trans::No, Trans::No, 2, 2, 2, 1.0, ad, 2, bd, 2, 1.0, cd, 2);
  EXPECT_EQ(cd[0], 11.0);
  EXPECT_EQ(cd[3], 44.0);
}

TEST(GemmCpu, EmptyInnerDimensionScalesC) {
  // K = 0: op(A)*op(B) is the zero matrix, so C = beta * C (and beta = 0 writes zeros over NaN).
  float c[] = {1, 2, 3, 4};
  gemm_cpu<float>(Trans::No, Trans::No, 2, 2, 0, 1.0f, nullptr, 0, nullptr, 2, 3.0f, c, 2);
  EXPECT_EQ(c[0], 3.0f);
  EXPECT_EQ(c[3], 12.0f);
  double cd[] = {std::nan(""), 2};
  gemm_cpu<double>(Trans::No, Trans::No, 1, 2, 0, 1.0, nullptr, 0, nullptr, 2, 0.0, cd, 2);
  EXPECT_EQ(cd[0], 0.0);
  EXPECT_EQ(cd[1], 0.0);
}

TEST(GemmCpu, RejectsTooSmallLeadingDimension) {
  const float a[6] = {}, b[6] = {};
  float c[4] = {};
  // A is (2,3) untransposed, so lda must be >= 3.
  EXPECT_THROW(gemm_cpu<float>(Trans::No, Trans::No, 2, 2, 3, 1.0f, a, 2, b, 2, 0.0f, c, 2),
               std::invalid_argument);
  // C is (2,2), so ldc must be >= 2.
  EXPECT_THROW(gemm_cpu<float>(Trans::No, Trans::No, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 1),
               std::invalid_argument);
}

}  // namespace
}  // namespace pb::kernels
