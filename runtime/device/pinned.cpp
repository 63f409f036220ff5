#include "runtime/device/pinned.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

#include "runtime/core/error.h"
#include "runtime/device/memory.h"

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
  note_transfer(Transfer::kAsyncCopy, nbytes);
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

// ---- HostBufferPool -----------------------------------------------------------------------------

std::shared_ptr<HostBufferPool> HostBufferPool::create(bool pinned) {
  if (pinned) (void)pinned_allocator();  // throws NotImplementedError in a CPU-only build
  return std::shared_ptr<HostBufferPool>(new HostBufferPool(pinned));
}

HostBufferPool::~HostBufferPool() {
  // Only free buffers are left: a buffer in use holds the pool. Their copies must be done before
  // the memory goes back (the pinned allocator would wait too; host memory has no such guard).
  for (auto& [nbytes, entry] : free_) {
    try {
      entry.second.synchronize();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "playbook: warning: waiting for a batch copy failed: %s\n", e.what());
    }
    if (pinned_) {
      try {
        pinned_allocator().free(entry.first);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "playbook: warning: freeing a pinned batch buffer failed: %s\n",
                     e.what());
      }
    } else {
      deallocate(entry.first, nbytes, Device::cpu());
    }
  }
}

Tensor HostBufferPool::tensor(const Shape& shape, DType dtype) {
  const std::size_t nbytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  if (nbytes == 0) return empty(shape, TensorOptions{}.with_dtype(dtype));
  void* ptr = nullptr;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.requests;
    auto [first, last] = free_.equal_range(nbytes);
    for (auto it = first; it != last; ++it) {
      if (!it->second.second.query()) continue;  // a copy still reads it
      ptr = it->second.first;
      free_.erase(it);
      ++stats_.reused;
      break;
    }
  }
  if (ptr == nullptr) {
    // Outside the lock: cudaHostAlloc is slow, and an out-of-memory throws from here.
    ptr = pinned_ ? pinned_allocator().allocate(nbytes, nullptr) : allocate(nbytes, Device::cpu());
    const std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.buffers;
    stats_.bytes += nbytes;
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    in_use_[ptr] = Held{nbytes, Event{}};
    ++stats_.in_use;
  }
  auto storage = std::make_shared<Storage>(
      ptr, nbytes, Device::cpu(), [pool = shared_from_this()](void* p) { pool->give_back(p); });
  return from_storage(std::move(storage), shape, dtype);
}

void HostBufferPool::record_event(const Tensor& host, Event done) {
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto it = in_use_.find(host.impl() ? host.impl()->storage->data() : nullptr);
  if (it == in_use_.end())
    fail("HostBufferPool::record_event: the tensor is not one of the pool's");
  it->second.done = std::move(done);
}

void HostBufferPool::give_back(void* ptr) {
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto it = in_use_.find(ptr);
  if (it == in_use_.end()) return;  // not ours: cannot happen, and a destructor must not throw
  free_.emplace(it->second.nbytes, std::make_pair(ptr, std::move(it->second.done)));
  in_use_.erase(it);
  --stats_.in_use;
}

HostBufferPool::Stats HostBufferPool::stats() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

// ---- to_device_async ----------------------------------------------------------------------------

DeviceCopy to_device_async(const Tensor& host, Device device) {
  if (!host.device().is_cpu()) {
    fail("to_device_async: the source is on {}, expected a host tensor", host.device().str());
  }
  if (device.is_cpu()) {
    note_transfer(Transfer::kAsyncCopy, 0);  // a handoff: host memory is the device's
    return {host, Event{}};
  }
  check_cuda_device(device);
  const std::size_t nbytes = host.nbytes();
  if (nbytes == 0) {
    return {empty(host.shape(), TensorOptions{}.with_dtype(host.dtype()).with_device(device)), {}};
  }
  // Allocated for the copy stream, which writes it; the compute stream, which reads it, is
  // recorded below so the block is reused only after those kernels too.
  CachingAllocator& cache = allocator(device);
  cudaStream_t stream = copy_stream(device);
  void* dst = cache.allocate(nbytes, stream);
  auto storage = std::make_shared<Storage>(dst, nbytes, device, [device](void* p) {
    try {
      allocator(device).free(p);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "playbook: warning: freeing a batch on %s failed: %s\n",
                   device.str().c_str(), e.what());
    }
  });
  Tensor out = from_storage(std::move(storage), host.shape(), host.dtype());
  Event done = copy_async(dst, device, host.raw_data(), Device::cpu(), nbytes, stream);
  done.make_stream_wait(compute_stream(device));
  cache.record_stream(dst, compute_stream(device));
  return {std::move(out), std::move(done)};
}

}  // namespace pb::device
