#pragma once
// Raw memory on a device: allocation, copies between any two devices, zero fill.
// CUDA memory comes from the device's caching allocator (caching_allocator.h) on the device's
// compute stream; copies and zero fills are queued on that stream (cuda_device.h).
#include <cstddef>
#include <cstdint>

#include "runtime/core/device.h"

namespace pb::device {

// 64-byte aligned host memory or device memory; nbytes == 0 returns nullptr.
void* allocate(std::size_t nbytes, Device device);
void deallocate(void* ptr, std::size_t nbytes, Device device) noexcept;
// Copy of nbytes between any two devices, ordered after the work queued on the CUDA side's
// compute stream. Between the host and a device, or two devices, it is complete when it returns
// (the host waits: a blocking copy). Within one CUDA device it is only queued on the compute
// stream (the host does not wait): every later kernel, copy and host read of the device is
// ordered after it, so a tensor clone inside a training step is no host-device barrier.
void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes);
// A read by the host: copies nbytes of memory on `src_device` into host memory that no tensor
// owns (Tensor::to_vector, item). Complete when it returns, so on a CUDA device the host waits
// for the work queued before it.
void copy_to_host(void* dst, const void* src, Device src_device, std::size_t nbytes);
// Zero fill; on a CUDA device queued on its compute stream (the host does not wait).
void zero(void* ptr, std::size_t nbytes, Device device);
// Blocks until all work queued on the device is done (no-op for the CPU).
void synchronize(Device device);

// Memory held by the runtime on a device. CPU: host tensors (64-byte aligned, sizes rounded up to
// 64), counted here; CUDA: the caching allocator's blocks (caching_allocator.h).
struct MemoryStats {
  std::size_t allocated_bytes = 0;
  std::size_t peak_allocated_bytes = 0;  // since the process started or reset_peak_memory
  std::size_t cap_bytes = 0;             // 0: no cap
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// Caps the memory the runtime may hold on `device` (0: no cap). An allocation past the cap throws
// OutOfMemoryError (runtime/device/errors.h), as a real out-of-memory does: on the CPU this is how
// tests and users rehearse a smaller device (train.memory_limit_mb).
void set_memory_cap(Device device, std::size_t bytes);

// Test aid: the host-device transfers of this process by kind, to check that a training step
// issues no blocking one. Counted on every device, the CPU included, by the call a CUDA run
// makes: a CPU run that reads a loss with item() counts a host read as a GPU run does.
enum class Transfer {
  kBlockingCopy,  // copy() between the host and a device or two devices
  kHostRead,      // copy_to_host(): the host waits for the device
  kAsyncCopy,     // pinned.h copy_async / to_device_async (on the CPU: a zero-copy handoff)
  kSynchronize,   // synchronize(): the host waits for the whole device
};
struct TransferCounts {
  std::uint64_t blocking_copies = 0;
  std::uint64_t host_reads = 0;
  std::uint64_t async_copies = 0;
  std::uint64_t synchronizations = 0;
};
TransferCounts transfer_counts();
// Called on the calling thread for every counted transfer (nullptr: none). Test aid.
using TransferObserver = void (*)(Transfer kind, std::size_t nbytes);
void set_transfer_observer(TransferObserver observer);
// Counts one transfer and tells the observer (for the copy paths outside memory.cpp).
void note_transfer(Transfer kind, std::size_t nbytes);

// Test aid: while on, every new allocation (host or device) is filled with 0xFF bytes (NaN as
// float, -1 as int32), so a kernel that leaves an output element unwritten fails its check.
void set_poison_allocations(bool on);
bool poison_allocations();

}  // namespace pb::device
