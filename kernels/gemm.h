#pragma once
// General matrix multiply, row-major.
//   C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C(M,N)
// op(X) is X or X^T per Trans. lda/ldb/ldc are row strides of A, B, C as stored:
//   A is (M,K) with lda >= K when ta == No, (K,M) with lda >= M when ta == Yes; likewise B.
// beta == 0 overwrites C without reading it (NaNs in C are not propagated).
// float goes to OpenBLAS cblas_sgemm, single-threaded calls on blocks of C split over the CPU
// kernel pool (kernels/cpu/parallel.h); double runs the plain reference loops (used by gradcheck
// and as the oracle in tests).
#include <string>

#include "kernels/common.h"

namespace pb::kernels {

enum class Trans : bool { No = false, Yes = true };

template <typename T>
void gemm_cpu(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Plain triple-loop reference for any T (what gemm_cpu<double> runs).
template <typename T>
void gemm_reference(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// CUDA (float only): the same function as gemm_cpu, enqueued on `stream` (asynchronous). A
// hand-written FP32 SGEMM (no tensor cores, no TF32), see kernels/cuda/gemm.cu. Any M, N, K up to
// 2^31 - 257, any leading dimensions; float4 loads when A and B are 16-byte aligned with lda and
// ldb multiples of 4. beta == 0 overwrites C without reading it.
void gemm_cuda(cudaStream_t stream, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K,
               float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
               float* C, int64_t ldc);

// "OpenBLAS 0.3.21 ... core Haswell, single-threaded calls split over playbook's 2 kernel
// thread(s)": what the float path runs on.
std::string cpu_blas_info();
// Sets the CPU kernels' thread count (kernels/cpu/parallel.h), GEMMs included, from one setting
// (deterministic runs use 1).
void set_cpu_blas_threads(int threads);

}  // namespace pb::kernels
