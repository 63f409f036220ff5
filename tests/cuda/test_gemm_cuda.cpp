// gemm_cuda and linear_*_cuda against the CPU kernels, on fresh random inputs (uniform in [-1, 1),
// never zeros) of many shapes: odd sizes no tile divides, 1x1x1, long K, padded leading
// dimensions, misaligned base pointers (the scalar-load path), all four transpose combinations
// and several alpha/beta.
//
// Every check measures ||out - ref|| / ||ref|| (Frobenius) against the double-precision reference
// (gemm_reference<double> on the same float inputs), and reports the CPU float kernel's error
// beside it. Bound: 1e-5. With FP32 accumulation the error of a length-K dot product of random
// terms grows like eps * sqrt(K) (eps = 6e-8): about 3e-6 at K = 2000, the longest here; the
// CPU float kernel (OpenBLAS) lands at the same level.
//
// Poisoning: C starts as NaN wherever the kernel must not read it (all of C when beta == 0, the
// padding columns of ldc otherwise), and the padding of A and B is NaN too. An unwritten output,
// a read of C with beta == 0, or a read of padding all turn the result into NaN, which never
// passes; the padding of C must come back still NaN (never written).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

constexpr double kRelTol = 1e-5;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A float device buffer, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  float* get() { return ptr_; }
  size_t bytes() const { return (n_ > 0 ? n_ : 1) * sizeof(float); }
  void upload(const std::vector<float>& host) {
    PB_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice));
  }
  void poison() { PB_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes())); }  // every float a NaN
  std::vector<float> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> host(n_);
    PB_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t n_;
  float* ptr_ = nullptr;
};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||out - ref|| / ||ref|| over the given elements; NaN if any out element is NaN.
template <typename Index>
double rel_error(const std::vector<float>& out, const std::vector<double>& ref, Index&& indices) {
  double num = 0.0, den = 0.0;
  for (const size_t i : indices) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

// A row-major (rows, cols) matrix stored with row stride ld >= cols, starting `offset` floats
// into its buffer. Logical elements are random, padding (and the offset) NaN.
struct StoredMatrix {
  int64_t rows, cols, ld, offset;
  std::vector<float> data;  // offset + rows * ld
  StoredMatrix(int64_t r, int64_t c, int64_t pad, int64_t off, uint32_t seed, bool fill_nan)
      : rows(r),
        cols(c),
        ld(c + pad),
        offset(off),
        data(static_cast<size_t>(off + r * (c + pad)), kNaN) {
    const std::vector<float> values = random_floats(static_cast<size_t>(r * c), seed);
    if (fill_nan) return;
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < c; ++j) at(i, j) = values[static_cast<size_t>(i * c + j)];
    }
  }
  float& at(int64_t i, int64_t j) { return data[static_cast<size_t>(offset + i * ld + j)]; }
  std::vector<size_t> logical() const {
    std::vector<size_t> idx;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) idx.push_back(static_cast<size_t>(offset + i * ld + j));
    }
    return idx;
  }
  std::vector<size_t> padding() const {
    std::vector<size_t> idx;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = cols; j < ld; ++j) idx.push_back(static_cast<size_t>(offset + i * ld + j));
    }
    return idx;
  }
};

struct GemmCase {
  int64_t M, N, K;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // leading dimension beyond the minimum
  int64_t offset = 0;                       // floats from the (aligned) allocation start
};

std::string describe(const GemmCase& c, Trans ta, Trans tb, float alpha, float beta) {
  return "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         " pads=" + std::to_string(c.pad_a) + "," + std::to_string(c.pad_b) + "," +
         std::to_string(c.pad_c) + " offset=" + std::to_string(c.offset) +
         " ta=" + (ta == Trans::Yes ? "T" : "N") + " tb=" + (tb == Trans::Yes ? "T" : "N") +
         " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
}

void check_gemm(const GemmCase& c, Trans ta, Trans tb, float alpha, float beta, uint32_t seed) {
  const std::string what = describe(c, ta, tb, alpha, beta);
  // Stored shapes: A is (M,K) or (K,M), B is (K,N) or (N,K).
  StoredMatrix A = ta == Trans::No ? StoredMatrix(c.M, c.K, c.pad_a, c.offset, seed, false)
                                   : StoredMatrix(c.K, c.M, c.pad_a, c.offset, seed, false);
  StoredMatrix B = tb == Trans::No ? StoredMatrix(c.K, c.N, c.pad_b, c.offset, seed + 1, false)
                                   : StoredMatrix(c.N, c.K, c.pad_b, c.offset, seed + 1, false);
  StoredMatrix C(c.M, c.N, c.pad_c, c.offset, seed + 2, beta == 0.0f);

  // Double reference and CPU float result, from the same float inputs.
  std::vector<double> ref = to_double(C.data);
  gemm_reference<double>(ta, tb, c.M, c.N, c.K, alpha, to_double(A.data).data() + A.offset, A.ld,
                         to_double(B.data).data() + B.offset, B.ld, beta, ref.data() + C.offset,
                         C.ld);
  std::vector<float> cpu = C.data;
  gemm_cpu<float>(ta, tb, c.M, c.N, c.K, alpha, A.data.data() + A.offset, A.ld,
                  B.data.data() + B.offset, B.ld, beta, cpu.data() + C.offset, C.ld);

  DeviceBuffer dA(A.data.size()), dB(B.data.size()), dC(C.data.size());
  dA.upload(A.data);
  dB.upload(B.data);
  dC.upload(C.data);
  gemm_cuda(nullptr, ta, tb, c.M, c.N, c.K, alpha, dA.get() + A.offset, A.ld, dB.get() + B.offset,
            B.ld, beta, dC.get() + C.offset, C.ld);
  PB_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> gpu = dC.download();

  const double err = rel_error(gpu, ref, C.logical());
  const double cpu_err = rel_error(cpu, ref, C.logical());
  EXPECT_LE(err, kRelTol) << what << " (cpu float: " << cpu_err << ")";
  for (const size_t i : C.padding()) {
    ASSERT_TRUE(std::isnan(gpu[i])) << what << ": padding of C written at " << i;
  }
}

const std::vector<GemmCase> kCases = {
    {1, 1, 1},
    {7, 5, 3},
    {129, 65, 33},
    {1000, 3, 2000},
    {3, 1000, 17},
    {64, 64, 64},             // exact 64x64 tiles, float4 path
    {130, 257, 19, 3, 5, 2},  // leading dimensions beyond the minimum, not multiples of 4
    {96, 200, 40, 4, 8, 4},   // padded, multiples of 4: float4 path with ld > minimum
    {65, 67, 9, 0, 0, 0, 1},  // base pointers off 16-byte alignment: scalar path
    // float4 path (ld % 4 == 0 through padding) with K, M or N not multiples of 4, so that the
    // last group of 4 straddles the edge (remainders 1, 2 and 3 all occur): NN is vectorised in
    // the first, TT in the second.
    {130, 199, 39, 1, 1, 1},
    {197, 130, 38, 3, 2, 2},
    {1600, 1700, 37},           // enough tiles for the 128x128 kernel, partial edge tiles
    {1536, 1536, 24, 4, 0, 0},  // 128x128 kernel, exact tiles, padded A
    {1601, 1598, 23, 1, 2, 2},  // 128x128 kernel, float4 path with straddling groups (NN)
};

TEST(GemmCuda, MatchesCpuAllTransposes) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 100;
  for (const GemmCase& c : kCases) {
    for (const Trans ta : {Trans::No, Trans::Yes}) {
      for (const Trans tb : {Trans::No, Trans::Yes}) {
        check_gemm(c, ta, tb, 1.0f, 0.0f, seed += 3);
        check_gemm(c, ta, tb, -0.75f, 0.5f, seed += 3);
      }
    }
  }
}

TEST(GemmCuda, BetaOneAccumulates) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  check_gemm({33, 47, 129}, Trans::No, Trans::Yes, 2.0f, 1.0f, 7);
  check_gemm({257, 300, 64, 0, 0, 3}, Trans::Yes, Trans::No, 1.0f, 1.0f, 8);
}

// K == 0 or alpha == 0: C = beta * C, A and B never read (they hold NaN here).
TEST(GemmCuda, ZeroKOrZeroAlphaScalesC) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t M = 37, N = 41, K = 5;
  const std::vector<float> c0 = random_floats(M * N, 9);
  std::vector<float> nan_ab(M * K + K * N + 8, kNaN);
  DeviceBuffer dAB(nan_ab.size()), dC(M * N);
  dAB.upload(nan_ab);
  for (const int64_t k : {int64_t{0}, K}) {
    const float alpha = k == 0 ? 1.0f : 0.0f;
    for (const float beta : {0.0f, 1.0f, -2.5f}) {
      if (beta == 0.0f) {
        dC.poison();
      } else {
        dC.upload(c0);
      }
      gemm_cuda(nullptr, Trans::No, Trans::No, M, N, k, alpha, dAB.get(), std::max<int64_t>(k, 1),
                dAB.get(), N, beta, dC.get(), N);
      const std::vector<float> out = dC.download();
      for (size_t i = 0; i < out.size(); ++i) {
        const float expect = beta == 0.0f ? 0.0f : beta * c0[i];
        ASSERT_EQ(out[i], expect) << "k=" << k << " beta=" << beta << " i=" << i;
      }
    }
  }
}

TEST(GemmCuda, EmptyAndInvalidShapes) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  gemm_cuda(nullptr, Trans::No, Trans::No, 0, 5, 3, 1.0f, nullptr, 3, nullptr, 5, 0.0f, nullptr, 5);
  gemm_cuda(nullptr, Trans::No, Trans::No, 5, 0, 3, 1.0f, nullptr, 3, nullptr, 1, 0.0f, nullptr, 1);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_THROW(gemm_cuda(nullptr, Trans::No, Trans::No, 4, 4, 4, 1.0f, nullptr, 3, nullptr, 4, 0.0f,
                         nullptr, 4),
               std::invalid_argument);  // lda < K
  EXPECT_THROW(gemm_cuda(nullptr, Trans::Yes, Trans::No, 4, 4, 4, 1.0f, nullptr, 4, nullptr, 4,
                         0.0f, nullptr, 3),
               std::invalid_argument);  // ldc < N
  EXPECT_THROW(gemm_cuda(nullptr, Trans::No, Trans::No, -1, 4, 4, 1.0f, nullptr, 4, nullptr, 4,
                         0.0f, nullptr, 4),
               std::invalid_argument);
}

// ---- linear -------------------------------------------------------------------------------------

struct LinearCase {
  int64_t M, N, K;
};

TEST(LinearCuda, ForwardAndBackwardMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<LinearCase> cases = {{1, 1, 1}, {7, 5, 3}, {33, 10, 784}, {128, 257, 65}};
  uint32_t seed = 500;
  for (const LinearCase& c : cases) {
    const std::string what =
        "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K);
    const std::vector<float> x = random_floats(c.M * c.K, ++seed),
                             w = random_floats(c.N * c.K, ++seed), b = random_floats(c.N, ++seed),
                             dy = random_floats(c.M * c.N, ++seed);
    std::vector<double> y_ref(c.M * c.N), y_nob_ref(c.M * c.N), dx_ref(c.M * c.K),
        dw_ref(c.N * c.K), db_ref(c.N);
    const std::vector<double> xd = to_double(x), wd = to_double(w), bd = to_double(b),
                              dyd = to_double(dy);
    linear_forward_cpu<double>(c.M, c.N, c.K, xd.data(), wd.data(), bd.data(), y_ref.data());
    linear_forward_cpu<double>(c.M, c.N, c.K, xd.data(), wd.data(), nullptr, y_nob_ref.data());
    linear_backward_cpu<double>(c.M, c.N, c.K, xd.data(), wd.data(), dyd.data(), dx_ref.data(),
                                dw_ref.data(), db_ref.data());

    DeviceBuffer d_x(x.size()), d_w(w.size()), d_b(b.size()), d_dy(dy.size()), d_y(c.M * c.N),
        d_dx(x.size()), d_dw(w.size()), d_db(b.size());
    d_x.upload(x);
    d_w.upload(w);
    d_b.upload(b);
    d_dy.upload(dy);

    d_y.poison();
    linear_forward_cuda(nullptr, c.M, c.N, c.K, d_x.get(), d_w.get(), d_b.get(), d_y.get());
    EXPECT_LE(rel_error(d_y.download(), y_ref, all_indices(y_ref.size())), kRelTol) << what;
    d_y.poison();
    linear_forward_cuda(nullptr, c.M, c.N, c.K, d_x.get(), d_w.get(), nullptr, d_y.get());
    EXPECT_LE(rel_error(d_y.download(), y_nob_ref, all_indices(y_ref.size())), kRelTol) << what;

    d_dx.poison();
    d_dw.poison();
    d_db.poison();
    linear_backward_cuda(nullptr, c.M, c.N, c.K, d_x.get(), d_w.get(), d_dy.get(), d_dx.get(),
                         d_dw.get(), d_db.get());
    EXPECT_LE(rel_error(d_dx.download(), dx_ref, all_indices(dx_ref.size())), kRelTol) << what;
    EXPECT_LE(rel_error(d_dw.download(), dw_ref, all_indices(dw_ref.size())), kRelTol) << what;
    EXPECT_LE(rel_error(d_db.download(), db_ref, all_indices(db_ref.size())), kRelTol) << what;

    // Null outputs are skipped: only db requested, dx and dw stay poisoned.
    d_dx.poison();
    d_db.poison();
    linear_backward_cuda(nullptr, c.M, c.N, c.K, d_x.get(), d_w.get(), d_dy.get(), nullptr, nullptr,
                         d_db.get());
    EXPECT_LE(rel_error(d_db.download(), db_ref, all_indices(db_ref.size())), kRelTol) << what;
    for (const float v : d_dx.download()) ASSERT_TRUE(std::isnan(v)) << what;
  }
}

}  // namespace
}  // namespace pb::kernels
