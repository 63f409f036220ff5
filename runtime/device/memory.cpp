#include "runtime/device/memory.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <new>

#include "runtime/core/error.h"
#include "runtime/device/caching_allocator.h"
#include "runtime/device/cuda_device.h"
#include "runtime/device/errors.h"

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

namespace {
std::atomic<std::uint64_t> g_transfers[4] = {};
std::atomic<TransferObserver> g_observer{nullptr};
}  // namespace

void note_transfer(Transfer kind, std::size_t nbytes) {
  g_transfers[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
  if (const TransferObserver observer = g_observer.load()) observer(kind, nbytes);
}

TransferCounts transfer_counts() {
  auto n = [](Transfer k) { return g_transfers[static_cast<int>(k)].load(); };
  return {n(Transfer::kBlockingCopy), n(Transfer::kHostRead), n(Transfer::kAsyncCopy),
          n(Transfer::kSynchronize)};
}

void set_transfer_observer(TransferObserver observer) {
  g_observer.store(observer);
}

void set_poison_allocations(bool on) {
  g_poison.store(on);
}
bool poison_allocations() {
  return g_poison.load();
}

namespace {
// Host tensor memory: allocated bytes (rounded), their peak, and the cap (0: none).
std::atomic<std::size_t> g_host_allocated{0};
std::atomic<std::size_t> g_host_peak{0};
std::atomic<std::size_t> g_host_cap{0};

std::size_t host_rounded(std::size_t nbytes) {
  return (nbytes + 63) / 64 * 64;
}

// Large host blocks are kept for reuse instead of going back to the system. glibc serves a block
// over its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it on free, so every op
// output of a large batch (50 MB for a ResNet stage-1 activation at batch 1000) cost a page fault
// per 4 KiB on first touch: a 10k-image ResNet-20 evaluation spent 7 of its 17 s in the kernel.
// Blocks of kHostCacheMin bytes or more, sizes rounded to 4 KiB, wait in a free list keyed by size
// and serve the next request of exactly that size (a training or evaluation loop asks for the same
// sizes every step), up to kHostCacheMax bytes held; the rest are freed. Cached blocks count
// neither as allocated nor against the cap (they hold no tensor); a failed system allocation
// empties the cache and tries again.
constexpr std::size_t kHostCacheMin = std::size_t(1) << 20;
constexpr std::size_t kHostCacheMax = std::size_t(1) << 30;

class HostBlockCache {
 public:
  ~HostBlockCache() { release_all(); }

  static std::size_t block_size(std::size_t rounded) {
    return rounded < kHostCacheMin ? rounded : (rounded + 4095) / 4096 * 4096;
  }

  void* take(std::size_t size) {
    if (size < kHostCacheMin) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = free_.find(size);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    held_ -= size;
    return p;
  }

  // Keeps p for reuse, or frees it when it is small or the cache is full.
  void give(void* p, std::size_t size) {
    if (size >= kHostCacheMin) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (held_ + size <= kHostCacheMax) {
        free_.emplace(size, p);
        held_ += size;
        return;
      }
    }
    std::free(p);
  }

  void release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [size, p] : free_) std::free(p);
    free_.clear();
    held_ = 0;
  }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::size_t held_ = 0;
};

HostBlockCache& host_cache() {
  static HostBlockCache* cache = new HostBlockCache();  // never destroyed: tensors may outlive it
  return *cache;
}
}  // namespace

MemoryStats memory_stats(Device d) {
  if (d.is_cpu()) return {g_host_allocated.load(), g_host_peak.load(), g_host_cap.load()};
  const AllocatorStats s = allocator(d).stats();
  return {s.allocated_bytes, s.peak_allocated_bytes, allocator(d).memory_cap()};
}

void reset_peak_memory(Device d) {
  if (d.is_cpu()) {
    g_host_peak.store(g_host_allocated.load());
    return;
  }
  allocator(d).reset_peak();
}

void set_memory_cap(Device d, std::size_t bytes) {
  if (d.is_cpu()) {
    g_host_cap.store(bytes);
    return;
  }
  allocator(d).set_memory_cap(bytes);
}

void* allocate(std::size_t nbytes, Device d) {
  if (nbytes == 0) return nullptr;
  if (d.is_cpu()) {
    const std::size_t rounded = host_rounded(nbytes);
    const std::size_t held = g_host_allocated.fetch_add(rounded) + rounded;
    const std::size_t cap = g_host_cap.load();
    if (cap != 0 && held > cap) {
      g_host_allocated.fetch_sub(rounded);
      throw OutOfMemoryError("cpu", nbytes, held - rounded, held - rounded, cap);
    }
    std::size_t peak = g_host_peak.load();
    while (held > peak && !g_host_peak.compare_exchange_weak(peak, held)) {
    }
    const std::size_t size = HostBlockCache::block_size(rounded);
    void* p = host_cache().take(size);
    if (!p) p = std::aligned_alloc(64, size);
    if (!p) {
      host_cache().release_all();
      p = std::aligned_alloc(64, size);
    }
    if (!p) {
      g_host_allocated.fetch_sub(rounded);
      throw OutOfMemoryError("cpu", nbytes, held - rounded, held - rounded, cap,
                             "the system allocator failed");
    }
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
    const std::size_t rounded = host_rounded(nbytes);
    host_cache().give(ptr, HostBlockCache::block_size(rounded));
    g_host_allocated.fetch_sub(rounded);
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

namespace {

// The copy itself; `wait`: the host waits for it (and for the work queued before it).
void copy_impl(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes,
               bool wait) {
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  if (dst_device.is_cuda()) check_cuda_device(dst_device);
  if (src_device.is_cuda()) check_cuda_device(src_device);
#ifdef PB_WITH_CUDA
  // The copy is queued on the compute stream of the CUDA side (dst's when both are CUDA), after
  // the kernels that produced src or still use dst. A plain cudaMemcpy would run on the legacy
  // default stream, which does not wait for non-blocking streams.
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
  if (wait) PB_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
  (void)wait;
#endif
}

}  // namespace

void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes) {
  if (nbytes == 0) return;
  const bool same_device = dst_device == src_device;
  if (!same_device) note_transfer(Transfer::kBlockingCopy, nbytes);
  // Within one CUDA device, stream order alone keeps every later use after the copy.
  copy_impl(dst, dst_device, src, src_device, nbytes, /*wait=*/!same_device);
}

void copy_to_host(void* dst, const void* src, Device src_device, std::size_t nbytes) {
  if (nbytes == 0) return;
  note_transfer(Transfer::kHostRead, nbytes);
  copy_impl(dst, Device::cpu(), src, src_device, nbytes, /*wait=*/true);
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
  note_transfer(Transfer::kSynchronize, 0);
  if (d.is_cpu()) return;
  check_cuda_device(d);
#ifdef PB_WITH_CUDA
  DeviceGuard guard(d);
  PB_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

}  // namespace pb::device
