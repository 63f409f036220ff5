#include "runtime/device/pinned.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

#include "runtime/core/error.h"

#ifdef PB_WITH_CUDA
#include "kernels/cuda/check.h"
#endif

namespace pb::device {

#ifdef PB_WITH_CUDA

namespace {

// An event on the device of the stream it marks (cudaEventRecord needs both on one device).
class PinnedStreamEvent final : public StreamEvent {
 public:
  explicit PinnedStreamEvent(cudaStream_t stream) {
    int index = 0;
    PB_CUDA_CHECK(cudaStreamGetDevice(stream, &index));
    event_ = Event(Device::cuda(index));
    event_.record(stream);
  }
  bool ready() override { return event_.query(); }
  void synchronize() override { event_.synchronize(); }

 private:
  Event event_;
};

class PinnedHostBackend final : public AllocatorBackend {
 public:
  void* allocate(std::size_t nbytes) override {
    void* ptr = nullptr;
    // Portable: usable for copies to and from every device, whichever is current.
    const cudaError_t status = cudaHostAlloc(&ptr, nbytes, cudaHostAllocPortable);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it so the next check does not see it
      return nullptr;
    }
    if (status != cudaSuccess) {
      throw CudaError(status, "cudaHostAlloc(&ptr, nbytes, cudaHostAllocPortable)", __FILE__,
                      __LINE__);
    }
    return ptr;
  }

  void free(void* ptr) override { PB_CUDA_CHECK(cudaFreeHost(ptr)); }

  std::unique_ptr<StreamEvent> record_event(Stream stream) override {
    return std::make_unique<PinnedStreamEvent>(stream);
  }

  std::string name() const override { return "pinned host memory"; }
};

// Marks a caching-allocator block named by ptr as used by `stream`; other memory is left alone.
void record_use(const void* ptr, Device device, cudaStream_t stream) {
  CachingAllocator& owner = device.is_cpu() ? pinned_allocator() : allocator(device);
  if (owner.owns(ptr)) owner.record_stream(ptr, stream);
}

}  // namespace

CachingAllocator& pinned_allocator() {
  // Never destroyed: pinned buffers in static storage may be freed after main returns.
  static CachingAllocator* instance = new CachingAllocator(std::make_unique<PinnedHostBackend>());
  return *instance;
}

Event copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                 std::size_t nbytes, cudaStream_t stream) {
  if (nbytes == 0) return {};
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return {};
  }
  if (dst_device.is_cuda()) check_cuda_device(dst_device);
  if (src_device.is_cuda()) check_cuda_device(src_device);
  const Device cuda_side = dst_device.is_cuda() ? dst_device : src_device;
  DeviceGuard guard(cuda_side);
  PB_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  record_use(dst, dst_device, stream);
  record_use(src, src_device, stream);
  Event done(cuda_side);
  done.record(stream);
  return done;
}

#else  // CPU-only build

CachingAllocator& pinned_allocator() {
  fail<NotImplementedError>("pinned host memory needs CUDA; playbook was built without it");
}

Event copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                 std::size_t nbytes, cudaStream_t /*stream*/) {
  if (nbytes == 0) return {};
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return {};
  }
  check_cuda_device(dst_device.is_cuda() ? dst_device : src_device);  // throws
  return {};
}

#endif  // PB_WITH_CUDA

Event copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                 std::size_t nbytes) {
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    return copy_async(dst, dst_device, src, src_device, nbytes, nullptr);
  }
  const Device cuda_side = dst_device.is_cuda() ? dst_device : src_device;
  return copy_async(dst, dst_device, src, src_device, nbytes, copy_stream(cuda_side));
}

// ---- PinnedBuffer -------------------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(std::size_t nbytes)
    : data_(pinned_allocator().allocate(nbytes, nullptr)), size_(nbytes) {}

PinnedBuffer::~PinnedBuffer() {
  reset();
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void PinnedBuffer::reset() noexcept {
  if (data_ == nullptr) return;
  try {
    pinned_allocator().free(data_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "playbook: warning: freeing a pinned buffer of %zu bytes failed: %s\n",
                 size_, e.what());
  }
  data_ = nullptr;
  size_ = 0;
}

}  // namespace pb::device
