#include "runtime/device/cpu.h"

#include "kernels/gemm.h"

namespace pb::device {

std::string cpu_blas_info() {
  return kernels::cpu_blas_info();
}

void set_cpu_blas_threads(int threads) {
  kernels::set_cpu_blas_threads(threads);
}

}  // namespace pb::device
