#pragma once
// Errors raised by the device layer.
#include <cstddef>
#include <string>

#include "runtime/core/error.h"

namespace pb {

// "512 B", "1.50 KiB", "2.00 MiB", "31.00 GiB": binary units, two decimals above bytes.
std::string format_bytes(std::size_t nbytes);

// An allocation did not fit: the backend (cudaMalloc, cudaHostAlloc) failed even after the
// allocator returned every cached block, or the request would exceed the configured memory cap.
// The batch-size sweep catches this to mark a trial infeasible, so the numbers are fields too:
//   "cuda:0 out of memory: tried to allocate 2.00 GiB; 30.50 GiB allocated, 31.00 GiB reserved
//    by playbook (cap 32.00 GiB)"
class OutOfMemoryError : public Error {
 public:
  // cap == 0: no cap. `detail`, when not empty, is appended to the message (e.g. the device's
  // free and total memory).
  OutOfMemoryError(std::string where, std::size_t requested, std::size_t allocated,
                   std::size_t reserved, std::size_t cap, const std::string& detail = {});

  // "cuda:0", "pinned host memory", or a test backend's name.
  const std::string& where() const { return where_; }
  // Bytes the caller asked for (before rounding to a size class).
  std::size_t requested() const { return requested_; }
  // Bytes in blocks handed out by the allocator when the request failed.
  std::size_t allocated() const { return allocated_; }
  // Bytes held from the backend (allocated + cached) when the request failed.
  std::size_t reserved() const { return reserved_; }
  // The memory cap in bytes, 0 when none was set.
  std::size_t cap() const { return cap_; }

 private:
  std::string where_;
  std::size_t requested_;
  std::size_t allocated_;
  std::size_t reserved_;
  std::size_t cap_;
};

}  // namespace pb
