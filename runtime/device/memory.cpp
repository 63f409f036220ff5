#include "runtime/device/memory.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/core/error.h"

#ifdef PB_WITH_CUDA
#include "kernels/cuda/check.h"
#endif

namespace pb {

#ifdef PB_WITH_CUDA
int cuda_device_count() {
  int n = 0;
  // No driver or no device: report zero devices instead of failing.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
#else
int cuda_device_count() {
  return 0;
}
#endif

bool cuda_available() {
  return cuda_device_count() > 0;
}

namespace device {
namespace {

void require_cuda(Device d) {
#ifdef PB_WITH_CUDA
  const int n = cuda_device_count();
  if (d.index < 0 || d.index >= n) {
    fail("device {} requested but {} CUDA device(s) are visible", d.str(), n);
  }
  PB_CUDA_CHECK(cudaSetDevice(d.index));
#else
  fail<NotImplementedError>("device {} requested but playbook was built without CUDA", d.str());
#endif
}

}  // namespace

void* allocate(std::size_t nbytes, Device d) {
  if (nbytes == 0) return nullptr;
  if (d.is_cpu()) {
    const std::size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  require_cuda(d);
#ifdef PB_WITH_CUDA
  void* p = nullptr;
  PB_CUDA_CHECK(cudaMalloc(&p, nbytes));
  return p;
#else
  return nullptr;
#endif
}

void deallocate(void* ptr, std::size_t /*nbytes*/, Device d) noexcept {
  if (!ptr) return;
  if (d.is_cpu()) {
    std::free(ptr);
    return;
  }
#ifdef PB_WITH_CUDA
  // Called from destructors, so a failure is reported rather than thrown.
  cudaError_t status = cudaSetDevice(d.index);
  if (status == cudaSuccess) status = cudaFree(ptr);
  if (status != cudaSuccess) {
    std::fprintf(stderr, "playbook: warning: cudaFree on %s failed: %s\n", d.str().c_str(),
                 cudaGetErrorString(status));
  }
#endif
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef PB_WITH_CUDA
  require_cuda(dst_device.is_cuda() ? dst_device : src_device);
  PB_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDefault));
#else
  require_cuda(dst_device.is_cuda() ? dst_device : src_device);
#endif
}

void zero(void* ptr, std::size_t nbytes, Device d) {
  if (nbytes == 0) return;
  if (d.is_cpu()) {
    std::memset(ptr, 0, nbytes);
    return;
  }
  require_cuda(d);
#ifdef PB_WITH_CUDA
  PB_CUDA_CHECK(cudaMemset(ptr, 0, nbytes));
#endif
}

void synchronize(Device d) {
  if (d.is_cpu()) return;
  require_cuda(d);
#ifdef PB_WITH_CUDA
  PB_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

}  // namespace device
}  // namespace pb
