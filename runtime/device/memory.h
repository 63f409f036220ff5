#pragma once
// Raw memory on a device: allocation, copies between any two devices, zero fill.
// CUDA memory comes from the device's caching allocator (caching_allocator.h) on the device's
// compute stream; copies and zero fills are queued on that stream (cuda_device.h).
#include <cstddef>

#include "runtime/core/device.h"

namespace pb::device {

// 64-byte aligned host memory or device memory; nbytes == 0 returns nullptr.
void* allocate(std::size_t nbytes, Device device);
void deallocate(void* ptr, std::size_t nbytes, Device device) noexcept;
// Synchronous copy of nbytes between any two devices: ordered after the work queued on the CUDA
// side's compute stream, and complete when it returns.
void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes);
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

// Test aid: while on, every new allocation (host or device) is filled with 0xFF bytes (NaN as
// float, -1 as int32), so a kernel that leaves an output element unwritten fails its check.
void set_poison_allocations(bool on);
bool poison_allocations();

}  // namespace pb::device
