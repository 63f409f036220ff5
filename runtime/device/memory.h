#pragma once
// Raw memory on a device: allocation, copies between any two devices, zero fill.
// In this issue CUDA memory comes straight from cudaMalloc; the caching allocator replaces it in
// the CUDA backend issue behind the same functions.
#include <cstddef>

#include "runtime/core/device.h"

namespace pb::device {

// 64-byte aligned host memory or device memory; nbytes == 0 returns nullptr.
void* allocate(std::size_t nbytes, Device device);
void deallocate(void* ptr, std::size_t nbytes, Device device) noexcept;
// Synchronous copy of nbytes between any two devices.
void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes);
void zero(void* ptr, std::size_t nbytes, Device device);
// Blocks until all work queued on the device is done (no-op for the CPU).
void synchronize(Device device);

}  // namespace pb::device
