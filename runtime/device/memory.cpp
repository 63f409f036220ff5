#include "runtime/device/memory.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>

#include "runtime/core/error.h"
#include "runtime/device/caching_allocator.h"
#include "runtime/device/cuda_device.h"

#ifdef PB_WITH_CUDA
#include "kernels/cuda/check.h"
#endif

namespace pb::device {

// CUDA memory comes from the device's caching allocator, on the device's compute stream: every
// kernel, memset and copy of the runtime is queued there, so a block freed while kernels still use
// it is reused only by later work on the same stream, which runs after them.

namespace {
std::atomic<bool> g_poison{false};
}

void set_poison_allocations(bool on) {
  g_poison.store(on);
}
bool poison_allocations() {
  return g_poison.load();
}

void* allocate(std::size_t nbytes, Device d) {
  if (nbytes == 0) return nullptr;
  if (d.is_cpu()) {
    const std::size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    if (poison_allocations()) std::memset(p, 0xFF, nbytes);
    return p;
  }
  CachingAllocator& cache = allocator(d);
  void* p = cache.allocate(nbytes, compute_stream(d));
#ifdef PB_WITH_CUDA
  if (poison_allocations()) PB_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, nbytes, compute_stream(d)));
#endif
  return p;
}

void deallocate(void* ptr, std::size_t nbytes, Device d) noexcept {
  if (!ptr) return;
  if (d.is_cpu()) {
    std::free(ptr);
    return;
  }
  // Called from destructors, so a failure is reported rather than thrown.
  try {
    allocator(d).free(ptr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "playbook: warning: freeing %zu bytes on %s failed: %s\n", nbytes,
                 d.str().c_str(), e.what());
  }
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  if (dst_device.is_cuda()) check_cuda_device(dst_device);
  if (src_device.is_cuda()) check_cuda_device(src_device);
#ifdef PB_WITH_CUDA
  // The copy is queued on the compute stream of the CUDA side (dst's when both are CUDA), after
  // the kernels that produced src or still use dst, and the host waits for it. A plain cudaMemcpy
  // would run on the legacy default stream, which does not wait for non-blocking streams.
  const Device cuda_side = dst_device.is_cuda() ? dst_device : src_device;
  DeviceGuard guard(cuda_side);
  cudaStream_t stream = compute_stream(cuda_side);
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device != src_device) {
    // Peer copy: also wait for the work queued on the source device.
    Event src_ready(src_device);
    src_ready.record(compute_stream(src_device));
    src_ready.make_stream_wait(stream);
  }
  PB_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  PB_CUDA_CHECK(cudaStreamSynchronize(stream));
#endif
}

void zero(void* ptr, std::size_t nbytes, Device d) {
  if (nbytes == 0) return;
  if (d.is_cpu()) {
    std::memset(ptr, 0, nbytes);
    return;
  }
  check_cuda_device(d);
#ifdef PB_WITH_CUDA
  // Stream-ordered: kernels that read the memory later on the compute stream see zeros.
  DeviceGuard guard(d);
  PB_CUDA_CHECK(cudaMemsetAsync(ptr, 0, nbytes, compute_stream(d)));
#endif
}

void synchronize(Device d) {
  if (d.is_cpu()) return;
  check_cuda_device(d);
#ifdef PB_WITH_CUDA
  DeviceGuard guard(d);
  PB_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

}  // namespace pb::device
