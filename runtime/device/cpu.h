#pragma once
// The CPU as a device: the BLAS library behind CPU matrix products and its thread count, for the
// layers above the kernels (the trainer's deterministic mode, `playbook info`).
#include <string>

namespace pb::device {

// "OpenBLAS 0.3.21 (SkylakeX kernels, 2 threads)"-style description of the CPU GEMM library.
std::string cpu_blas_info();
// Threads the CPU GEMM uses from now on (1 makes CPU runs bitwise reproducible).
void set_cpu_blas_threads(int threads);

}  // namespace pb::device
