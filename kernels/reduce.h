#pragma once
// Reductions of whole tensors to one element: sum, mean, and the global L2 norm of many tensors
// (gradient clipping). The CPU versions accumulate in double for every T, in index order.
//
// CUDA versions (float) never synchronise with the host: the result stays in device memory.
// Every CUDA reduction to one element in kernels/ (sum, mean, global_l2_norm, the cross-entropy
// and MSE forwards in loss.h, topk_error_count in metrics.h) takes a device `workspace` of at least
// reduce_cuda_workspace_bytes() bytes. The size is a constant of the build, so the runtime can keep
// one such buffer per stream and hand it to every reduction on that stream; two launches that may
// run concurrently (different streams) need different workspaces. The workspace holds no state
// between calls (no zeroing needed). Results are deterministic: a fixed partition of the input into
// per-block partial sums (a function of the sizes only, not of the GPU), each reduced in a fixed
// tree order and accumulated in double, then one block combines the partials in a fixed order.
#include "kernels/common.h"

namespace pb::kernels {

// *out = sum_i x_i over n elements (0 when n == 0).
template <typename T>
void sum_cpu(int64_t n, const T* x, T* out);
// *out = sum_i x_i / n (0 when n == 0, an empty mean as in mse_forward).
template <typename T>
void mean_cpu(int64_t n, const T* x, T* out);

// *out = sqrt(sum over tensors t of sum_i ptrs[t][i]^2), tensor t holding sizes[t] elements
// (sizes may be 0; count == 0 gives 0). The norm of the concatenation of all tensors.
template <typename T>
void global_l2_norm_cpu(int count, const T* const* ptrs, const int64_t* sizes, T* out);

// Bytes of device workspace every CUDA reduction to one element needs (see above). Constant.
int64_t reduce_cuda_workspace_bytes();
// The first-stage grid of those reductions has at most this many blocks (one partial each).
inline constexpr int kReduceCudaMaxBlocks = 1024;

// CUDA versions (float; `out` in device memory). n == 0 (count == 0) launches no kernel and only
// clears *out with cudaMemsetAsync.
void sum_cuda(cudaStream_t stream, int64_t n, const float* x, float* out, void* workspace);
void mean_cuda(cudaStream_t stream, int64_t n, const float* x, float* out, void* workspace);
// d_ptrs: (count) device array of device pointers; d_sizes: (count) device array of element
// counts; both read by the kernel, so they may be filled by an earlier stream-ordered copy (or
// once, when the parameter set is fixed) and the norm needs no host sync. Sums of squares are
// accumulated in double; *out = sqrt of the double sum, rounded once to float. Tensors whose
// pointer is 16-byte aligned are read with 16-byte loads. Sizes must be >= 0.
void global_l2_norm_cuda(cudaStream_t stream, int count, const float* const* d_ptrs,
                         const int64_t* d_sizes, float* out, void* workspace);

}  // namespace pb::kernels
