// CUDA inverted dropout (float). Element i is kept iff philox_uniform(seed, offset, i) >= p, the
// same stateless draw as kernels/cpu/dropout.cpp, and kept values are multiplied by the same
// float scale 1.0f / (1.0f - p) computed on the host; so the mask and the values equal the CPU
// kernel's bit for bit, whatever the grid shape.
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/dropout.h"
#include "kernels/philox.h"

namespace pb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // enough to fill the GPU with a grid-stride loop

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// (n) out = keep_i ? in * scale : 0; forward (x -> y) and backward (dy -> dx) alike.
__global__ void dropout_mask_kernel(int64_t n, float p, float scale, uint64_t seed, uint64_t offset,
                                    const float* in, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool keep = philox_uniform(seed, offset, static_cast<uint64_t>(i)) >= p;
    out[i] = keep ? in[i] * scale : 0.0f;
  }
}

void launch_dropout(cudaStream_t stream, int64_t n, float p, uint64_t seed, uint64_t offset,
                    const float* in, float* out) {
  if (n <= 0) return;
  if (p == 0.0f) {  // keep everything: an exact copy, as on the CPU
    if (in != out) {
      PB_CUDA_CHECK(cudaMemcpyAsync(out, in, static_cast<size_t>(n) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream));
    }
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  dropout_mask_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, p, scale, seed, offset, in, out);
  PB_CUDA_LAUNCH_CHECK();
}

}  // namespace

void dropout_forward_cuda(cudaStream_t stream, int64_t n, float p, uint64_t seed, uint64_t offset,
                          const float* x, float* y) {
  launch_dropout(stream, n, p, seed, offset, x, y);
}

// Recomputes the forward mask from (seed, offset, i).
void dropout_backward_cuda(cudaStream_t stream, int64_t n, float p, uint64_t seed, uint64_t offset,
                           const float* dy, float* dx) {
  launch_dropout(stream, n, p, seed, offset, dy, dx);
}

}  // namespace pb::kernels
