#pragma once
// Pinned (page-locked) host memory and asynchronous host<->device copies.
//
// cudaMemcpyAsync overlaps with compute only when the host side is pinned, and cudaHostAlloc is
// slow (it locks pages), so pinned memory comes from a process-wide CachingAllocator
// (caching_allocator.h: same size classes and statistics) backed by cudaHostAlloc/cudaFreeHost.
// Pinned blocks belong to no stream (they are allocated "on" nullptr); every stream that reads or
// writes one must be recorded with record_stream — copy_async does it — so that a block freed
// while a copy is still in flight is reused only after that copy completes.
//
// One step of the input pipeline (DESIGN.md):
//   PinnedBuffer batch(bytes);                                  // loader thread: from the cache
//   ... collate into batch.data() ...
//   void* x = allocator(dev).allocate(bytes, copy_stream(dev)); // main thread: written there
//   Event ready = copy_async(x, dev, batch.data(), Device::cpu(), bytes);  // on copy_stream(dev)
//   ready.make_stream_wait(compute_stream(dev));                // kernels wait; the host doesn't
//   allocator(dev).record_stream(x, compute_stream(dev));       // x is read there too
//   batch = {};                                                 // safe: reused after the copy
//
// In a CPU-only build the pinned allocator throws NotImplementedError; copy_async between two CPU
// buffers still works (a plain memcpy).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "runtime/core/device.h"
#include "runtime/core/tensor.h"
#include "runtime/device/caching_allocator.h"
#include "runtime/device/cuda_device.h"

namespace pb::device {

// The process-wide pinned host allocator (portable across devices), created on first use and
// never destroyed. Its OutOfMemoryError names "pinned host memory".
CachingAllocator& pinned_allocator();

// An RAII pinned host buffer from pinned_allocator(). Move-only; an empty buffer holds nothing.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t nbytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  std::size_t size() const { return size_; }
  bool empty() const { return data_ == nullptr; }

 private:
  void reset() noexcept;

  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// Enqueues a copy of nbytes from src to dst on `stream` and returns an event recorded right after
// it (make another stream wait on it, or query/synchronize it). Each side may be the CPU or a CUDA
// device; `stream` must belong to the CUDA side (dst's device when both are CUDA). Host memory
// should be pinned: pageable memory works, but the call then blocks while the data is staged.
//
// Ordering before the copy is the caller's: dst and src must be safe to use on `stream` (allocated
// for it, or `stream` made to wait on an event of the stream that last used them). After the
// copy it is handled here: a dst or src inside a block of the pinned allocator or of the device's
// caching allocator is recorded as used by `stream`, so freeing it right away is safe.
//
// Between two CPU buffers this is a synchronous memcpy returning an empty (complete) event.
Event copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                 std::size_t nbytes, cudaStream_t stream);
// The same on the copy stream of the CUDA side (dst's device when both are CUDA).
Event copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                 std::size_t nbytes);

// ---- the input pipeline's buffers
// ----------------------------------------------------------------
//
// HostBufferPool: the host buffers that loader workers collate batches into, reused instead of
// allocated per batch: pinned (pinned_allocator(), for copies that overlap compute) when the
// batches go to a CUDA device, plain host memory otherwise. A buffer handed out as a CPU tensor
// returns to the pool when the last tensor using it goes away; when an asynchronous copy still
// reads it (record_event), it is handed out again only once that copy's event has completed,
// checked without blocking at the next request. The pool lives as long as its last buffer in use.
//
//   auto pool = HostBufferPool::create(/*pinned=*/device.is_cuda());
//   Tensor images = pool->tensor(Shape{B, C, H, W}, DType::F32);   // loader thread: collate
//   DeviceCopy x = to_device_async(images, device);                // main thread: H2D, no wait
//   pool->record_event(images, std::move(x.done));                 // reuse after the copy
class HostBufferPool : public std::enable_shared_from_this<HostBufferPool> {
 public:
  struct Stats {
    std::size_t buffers = 0;     // held by the pool now (free and in use)
    std::size_t in_use = 0;      // handed out, not yet returned
    std::size_t bytes = 0;       // in all the buffers held
    std::uint64_t requests = 0;  // tensor() calls
    std::uint64_t reused = 0;    // of those, served by a returned buffer
  };

  // pinned = true needs CUDA (pinned_allocator()).
  static std::shared_ptr<HostBufferPool> create(bool pinned);
  ~HostBufferPool();
  HostBufferPool(const HostBufferPool&) = delete;
  HostBufferPool& operator=(const HostBufferPool&) = delete;

  // A CPU tensor over a buffer of exactly its bytes: a returned one whose last copy has
  // completed, or a new one. Thread-safe.
  Tensor tensor(const Shape& shape, DType dtype);
  // The buffer under `host` (a tensor from this pool) is reused only after `done` completes.
  void record_event(const Tensor& host, Event done);
  Stats stats() const;
  bool pinned() const { return pinned_; }

 private:
  explicit HostBufferPool(bool pinned) : pinned_(pinned) {}
  void give_back(void* ptr);

  struct Held {
    std::size_t nbytes = 0;
    Event done;  // the last copy reading the buffer (empty: none)
  };
  const bool pinned_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, std::pair<void*, Event>> free_;  // by size
  std::map<void*, Held> in_use_;
  Stats stats_;
};

// A host tensor's values on a device, and the event of the copy that put them there.
struct DeviceCopy {
  Tensor tensor;
  Event done;  // complete once the host buffer has been read (empty: nothing in flight)
};

// host (a CPU tensor; pinned for overlap) -> a new tensor on `device`, copied on the device's copy
// stream into memory allocated for that stream; the compute stream waits for the copy, the host
// does not. For a CPU `device` the result is `host` itself (no copy: host memory is the device's).
// Counted as an asynchronous transfer (memory.h transfer_counts).
DeviceCopy to_device_async(const Tensor& host, Device device);

}  // namespace pb::device
