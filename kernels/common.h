#pragma once
// Conventions shared by every kernel header.
//
// kernels/ is pure compute on raw pointers and shapes; it knows nothing of tensors or autograd.
// Each op family has one header here declaring its CPU entry points (templates over float and
// double, explicitly instantiated in kernels/cpu/<family>.cpp) and, where written, its CUDA entry
// points (float, stream first, in kernels/cuda/<family>.cu). Both take the same pointers and
// shapes. All tensors are contiguous, row-major (C order). Outputs are overwritten, never
// accumulated into, unless a comment says otherwise. Element counts are int64_t.
#include <cstdint>

// cuda_runtime.h declares the same alias; repeating it here keeps CUDA headers out of CPU code.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

#if defined(__CUDACC__)
#define PB_HOST_DEVICE __host__ __device__
#else
#define PB_HOST_DEVICE
#endif
