// Fully connected layer on CUDA (float): the device side of linear_forward_cpu /
// linear_backward_cpu, built on gemm_cuda plus two small kernels.
//   x: (M,K)   w: (N,K)   b: (N)   y, dy: (M,N)
//   forward    y  = b (broadcast, bias_broadcast_kernel), then y = x w^T + 1*y   (gemm, beta = 1)
//   backward   dx = dy w (gemm)   dw = dy^T x (gemm)   db = column sums of dy (column_sum_kernel)
// The column sum is deterministic: each block owns 32 columns, its 8 thread rows each sum a fixed
// strided subset of the rows, and the 8 partial sums are added in a fixed order.
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

// (M,N) y[i][j] = b[j]
__global__ void bias_broadcast_kernel(int64_t M, int64_t N, const float* b, float* y) {
  const int64_t total = M * N;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[e] = b[e % N];
  }
}

constexpr int kSumCols = 32;  // columns per block (threadIdx.x)
constexpr int kSumRows = 8;   // row lanes per block (threadIdx.y)

// dy: (M,N) -> db: (N), db[j] = sum_i dy[i][j]. Block (32,8), grid ceil(N/32).
__global__ void column_sum_kernel(int64_t M, int64_t N, const float* dy, float* db) {
  __shared__ float partial[kSumRows][kSumCols];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kSumCols) + threadIdx.x;
  float sum = 0.0f;
  if (j < N) {
    for (int64_t i = threadIdx.y; i < M; i += kSumRows) sum += dy[i * N + j];
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < N) {
    float total = 0.0f;
    for (int r = 0; r < kSumRows; ++r) total += partial[r][threadIdx.x];
    db[j] = total;
  }
}

}  // namespace

void linear_forward_cuda(cudaStream_t stream, int64_t M, int64_t N, int64_t K, const float* x,
                         const float* w, const float* b, float* y) {
  if (M == 0 || N == 0) return;
  if (b != nullptr) {
    const int64_t blocks = std::min<int64_t>((M * N + kThreads - 1) / kThreads, kMaxBlocks);
    bias_broadcast_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(M, N, b, y);
    PB_CUDA_LAUNCH_CHECK();
  }
  // y(M,N) = x(M,K) * w^T(K,N) + beta * y
  gemm_cuda(stream, Trans::No, Trans::Yes, M, N, K, 1.0f, x, K, w, K, b != nullptr ? 1.0f : 0.0f, y,
            N);
}

void linear_backward_cuda(cudaStream_t stream, int64_t M, int64_t N, int64_t K, const float* x,
                          const float* w, const float* dy, float* dx, float* dw, float* db) {
  // dx(M,K) = dy(M,N) * w(N,K)
  if (dx != nullptr)
    gemm_cuda(stream, Trans::No, Trans::No, M, K, N, 1.0f, dy, N, w, K, 0.0f, dx, K);
  // dw(N,K) = dy^T(N,M) * x(M,K)
  if (dw != nullptr)
    gemm_cuda(stream, Trans::Yes, Trans::No, N, K, M, 1.0f, dy, N, x, K, 0.0f, dw, K);
  // db(N) = sum over the rows of dy
  if (db != nullptr && N > 0) {
    const dim3 block(kSumCols, kSumRows);
    const int64_t blocks = (N + kSumCols - 1) / kSumCols;
    column_sum_kernel<<<static_cast<unsigned>(blocks), block, 0, stream>>>(M, N, dy, db);
    PB_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace pb::kernels
