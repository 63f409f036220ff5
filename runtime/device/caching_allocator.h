#pragma once
// A caching allocator for device memory (one per CUDA device) and pinned host memory.
//
// Design note. cudaMalloc and cudaFree are slow and cudaFree synchronises the whole device, so
// freed memory is kept in a cache and handed out again without calling the backend. The scheme
// follows PyTorch's CUDACachingAllocator, simplified:
//
//   Rounding   every request is rounded up to a multiple of 512 B (kMinBlockSize).
//   Pools      rounded sizes <= 1 MiB (kSmallSize) come from the small pool, larger ones from the
//              large pool; a block never moves between pools.
//   Segments   the backend is asked for whole segments: 2 MiB (kSmallSegment) for the small pool;
//              20 MiB (kLargeSegment) for large requests under 10 MiB (kMinLargeAlloc), otherwise
//              the request rounded up to 2 MiB (kLargeRounding). When the preferred large segment
//              does not fit (cap or backend), the request rounded up to 2 MiB is tried before
//              giving up.
//   Splitting  a request takes the smallest cached block of its pool and stream that is large
//              enough (best fit) and splits off the remainder as a new free block when it is at
//              least 512 B (small pool) or more than 1 MiB (large pool); otherwise the caller gets
//              the whole block. Freed blocks merge with free neighbours of the same segment.
//   Streams    a block belongs to the stream it was allocated for (all blocks of a segment share
//              it), and a freed block is reused only by requests on that same stream, where
//              stream order makes reuse safe without any synchronisation. A block also used on
//              other streams must be declared with record_stream(ptr, stream); when it is freed
//              the allocator records an event on each of those streams and keeps the block out
//              of the cache until all have completed (polled at each allocation).
//   Out of     when the backend fails (or the memory cap would be exceeded) the allocator waits
//   memory     for pending events, returns every fully free segment to the backend and tries once
//              more; if that fails too it throws pb::OutOfMemoryError.
//   Stats      allocated bytes count rounded block sizes; reserved bytes count segments held from
//              the backend (allocated + cached). The cap limits reserved bytes.
//   No caching with caching off (PLAYBOOK_NO_CUDA_MEMORY_CACHING=1 in the environment for the
//              device allocators, like PyTorch's PYTORCH_NO_CUDA_MEMORY_CACHING) every request
//              is its own backend allocation of exactly the requested bytes, and free() returns
//              it to the backend at once (after waiting for the events of the streams that used
//              it). Slow, but every tensor is a separate allocation, so compute-sanitizer
//              memcheck sees an access past a tensor's end and reports nothing as kept memory.
//              Stats count the requested bytes as block and segment sizes; the cap still holds.
//
// The core is backend-agnostic: AllocatorBackend supplies memory and stream events, so the
// caching logic is unit-tested on the CPU with a fake backend (tests/runtime/
// test_caching_allocator.cpp). allocator(Device) returns the per-device instance backed by
// cudaMalloc/cudaFree and CUDA events; pinned.h has the pinned host instance.
//
// Thread-safe: every public member function takes one mutex, and backend calls happen under it.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernels/common.h"  // cudaStream_t without the CUDA headers
#include "runtime/core/device.h"
#include "runtime/device/errors.h"

namespace pb::device {

// A stream handle. The allocator core only compares them; nullptr is a valid stream.
using Stream = cudaStream_t;

// Marks the work queued on one stream when it was recorded.
class StreamEvent {
 public:
  virtual ~StreamEvent() = default;
  // True once that work has completed. Never blocks.
  virtual bool ready() = 0;
  // Blocks the host until that work has completed.
  virtual void synchronize() = 0;
};

// Where the memory and events come from. Every call is made with the allocator's mutex held, and
// StreamEvents are destroyed under it too, so implementations need no locking of their own.
struct AllocatorBackend {
  virtual ~AllocatorBackend() = default;
  // nbytes of memory, or nullptr when out of memory. Any other failure throws.
  virtual void* allocate(std::size_t nbytes) = 0;
  virtual void free(void* ptr) = 0;
  // An event marking the work queued on `stream` so far.
  virtual std::unique_ptr<StreamEvent> record_event(Stream stream) = 0;
  // Names the memory in messages: "cuda:0", "pinned host memory".
  virtual std::string name() const = 0;
  // Appended to out-of-memory messages when not empty, e.g. "the device has 0.50 GiB free of
  // 79.19 GiB". Must not throw.
  virtual std::string memory_info() const { return {}; }
};

struct AllocatorStats {
  std::size_t allocated_bytes = 0;       // in blocks handed out now (rounded sizes)
  std::size_t peak_allocated_bytes = 0;  // maximum of allocated_bytes since creation/reset_peak
  std::size_t requested_bytes = 0;       // what the callers of those blocks asked for
  std::size_t reserved_bytes = 0;        // in segments held from the backend (allocated + cached)
  std::size_t peak_reserved_bytes = 0;   // maximum of reserved_bytes since creation/reset_peak
  std::size_t active_blocks = 0;         // blocks handed out now
  std::size_t pending_free_blocks = 0;   // freed, waiting for other streams' events
  std::size_t segments = 0;              // backend allocations held now
  std::uint64_t allocations = 0;         // successful allocate() calls (nbytes > 0)
  std::uint64_t cache_hits = 0;          // of those, served from the cache without the backend
  std::uint64_t backend_allocs = 0;      // successful backend allocate() calls
  std::uint64_t backend_frees = 0;       // backend free() calls
  std::uint64_t ooms = 0;                // OutOfMemoryErrors thrown
};

class CachingAllocator {
 public:
  static constexpr std::size_t kMinBlockSize = 512;
  static constexpr std::size_t kSmallSize = std::size_t{1} << 20;       // 1 MiB
  static constexpr std::size_t kSmallSegment = std::size_t{2} << 20;    // 2 MiB
  static constexpr std::size_t kMinLargeAlloc = std::size_t{10} << 20;  // 10 MiB
  static constexpr std::size_t kLargeSegment = std::size_t{20} << 20;   // 20 MiB
  static constexpr std::size_t kLargeRounding = std::size_t{2} << 20;   // 2 MiB

  // caching = false: every allocate/free goes to the backend (see "No caching" above).
  explicit CachingAllocator(std::unique_ptr<AllocatorBackend> backend, bool caching = true);
  // Returns every fully free segment to the backend; blocks still handed out are leaked.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // nbytes (rounded up, see above) usable on `stream`; nullptr for nbytes == 0. Throws
  // pb::OutOfMemoryError when the memory cannot be found.
  void* allocate(std::size_t nbytes, Stream stream);
  // Returns a pointer from allocate() to the cache; nullptr is ignored. Throws ValueError for a
  // pointer this allocator did not hand out (or already took back).
  void free(void* ptr);
  // Declares that the block containing ptr is also used by work queued on `stream`, so that after
  // free() it is reused only once that work is done. A no-op for the block's own stream.
  void record_stream(const void* ptr, Stream stream);
  // True when ptr lies inside a block handed out by this allocator and not yet freed.
  bool owns(const void* ptr) const;

  // Waits for pending events, then returns every fully free segment to the backend.
  void empty_cache();
  AllocatorStats stats() const;
  // Restarts the peaks at the current allocated and reserved bytes.
  void reset_peak();
  // Requests that would make reserved bytes exceed `bytes` fail as out of memory; 0 removes the
  // cap. Lowering the cap below the reserved bytes frees nothing until an allocation needs room.
  void set_memory_cap(std::size_t bytes);
  std::size_t memory_cap() const;
  std::string name() const;
  // False when every request goes to the backend (constructed with caching = false).
  bool caching() const { return caching_; }

  // The size a request is rounded to, and the segment the backend is first asked for when no
  // cached block fits it.
  static std::size_t round_size(std::size_t nbytes);
  static std::size_t segment_size(std::size_t rounded);

 private:
  struct Block;
  struct BlockLess {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BlockLess>;
  struct PendingFree {
    std::unique_ptr<StreamEvent> event;
    Block* block;
  };

  Pool& pool_for(const Block& block);
  Block* find_cached(std::size_t size, Stream stream);
  Block* allocate_segment(std::size_t size, Stream stream);
  void release_block(Block* block);
  void process_events();
  void release_cached();
  Block* find_live(const void* ptr) const;
  void* allocate_uncached(std::size_t nbytes, Stream stream);
  void free_uncached(Block* block);

  mutable std::mutex mutex_;
  std::unique_ptr<AllocatorBackend> backend_;
  Pool small_pool_;
  Pool large_pool_;
  std::map<std::uintptr_t, Block*> live_;  // blocks handed out, by address
  std::set<Block*> segments_;              // the first block of every segment
  std::vector<PendingFree> pending_;
  AllocatorStats stats_;
  std::size_t cap_ = 0;
  const bool caching_ = true;
};

// The environment switch of the device allocators: true when PLAYBOOK_NO_CUDA_MEMORY_CACHING is
// set to anything but "" or "0" (read at each call; allocator(Device) reads it once per device,
// when the device's allocator is created).
bool cuda_memory_caching_disabled_by_env();

// The caching allocator of CUDA device `device` (cudaMalloc/cudaFree, CUDA events), created on
// first use and never destroyed; without caching when cuda_memory_caching_disabled_by_env() (a
// one-line note on stderr says so). Throws ValueError for a CPU device or one that is not visible,
// NotImplementedError in a CPU-only build.
CachingAllocator& allocator(Device device);

}  // namespace pb::device
