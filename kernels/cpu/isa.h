#pragma once
// Which instruction sets the CPU kernels may use (kernels/cpu only, and tests).
//
// The library is built for baseline x86-64; kernels with AVX2 code (the direct convolution,
// kernels/cpu/conv2d_direct.cpp) choose it at run time when this CPU has it and it is enabled.
// Tests and benchmarks turn it off to run the portable path on the same machine. (Batch norm was
// tried with an AVX2 copy of its loops: 10-15% faster alone, about 1% of a ResNet-20 step, since
// it is bound by memory traffic; not worth a second copy of the code.)
namespace pb::kernels::cpu {

// This CPU has AVX2 (and FMA, for avx2_fma_kernels_enabled), and the AVX2 kernels are enabled
// (the default).
bool avx2_kernels_enabled();
bool avx2_fma_kernels_enabled();

// Enables or disables every AVX2 kernel (enabling has no effect on a CPU without AVX2).
void set_avx2_kernels_enabled(bool on);

}  // namespace pb::kernels::cpu
