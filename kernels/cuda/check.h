#pragma once
// Status checking for every CUDA runtime call and every kernel launch.
//   PB_CUDA_CHECK(cudaMemcpyAsync(...));   // throws pb::CudaError naming the call, file and line
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   PB_CUDA_LAUNCH_CHECK();                 // launch-configuration errors, reported at the launch
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace pb {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const char* expr, const char* file, int line)
      : std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(code) + " (" +
                           cudaGetErrorString(code) + ") in `" + expr + "` at " + file + ":" +
                           std::to_string(line)),
        code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

}  // namespace pb

#define PB_CUDA_CHECK(expr)                                         \
  do {                                                              \
    const cudaError_t pb_status_ = (expr);                          \
    if (pb_status_ != cudaSuccess) {                                \
      throw ::pb::CudaError(pb_status_, #expr, __FILE__, __LINE__); \
    }                                                               \
  } while (0)

#define PB_CUDA_LAUNCH_CHECK() PB_CUDA_CHECK(cudaGetLastError())
