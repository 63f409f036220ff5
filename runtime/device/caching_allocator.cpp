#include "runtime/device/caching_allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string_view>
#include <utility>

#include "runtime/core/error.h"
#include "runtime/device/cuda_device.h"

#ifdef PB_WITH_CUDA
#include "kernels/cuda/check.h"
#endif

namespace pb::device {

// One block of memory inside a segment. The blocks of a segment tile it in address order through
// prev/next; the first block of a segment (prev == nullptr) stays the first across splits and
// merges, so segments_ can hold it.
struct CachingAllocator::Block {
  std::uintptr_t addr = 0;
  std::size_t size = 0;       // rounded bytes
  Stream stream = nullptr;    // the stream of the segment this block was cut from
  bool small = false;         // small pool (else large)
  bool in_use = false;        // handed out, or freed but waiting for events
  std::size_t requested = 0;  // the caller's bytes while handed out
  Block* prev = nullptr;
  Block* next = nullptr;
  std::vector<Stream> stream_uses;  // other streams that used it (record_stream)
  std::size_t pending_events = 0;   // events still to complete before it returns to the cache

  void* ptr() const { return reinterpret_cast<void*>(addr); }
};

namespace {

constexpr std::size_t round_up(std::size_t n, std::size_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

// Requests above this cannot be rounded without overflow: out of memory on any device.
constexpr std::size_t kMaxRequest = std::numeric_limits<std::size_t>::max() / 2;

}  // namespace

bool CachingAllocator::BlockLess::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return std::less<Stream>()(a->stream, b->stream);
  if (a->size != b->size) return a->size < b->size;
  return a->addr < b->addr;
}

CachingAllocator::CachingAllocator(std::unique_ptr<AllocatorBackend> backend, bool caching)
    : backend_(std::move(backend)), caching_(caching) {
  if (!backend_) fail("CachingAllocator: the backend is null");
}

CachingAllocator::~CachingAllocator() {
  try {
    release_cached();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "playbook: warning: releasing the %s memory cache failed: %s\n",
                 backend_->name().c_str(), e.what());
  }
  // Segments with blocks still handed out are leaked on purpose: their memory may still be used.
  for (Block* head : segments_) {
    for (Block* b = head; b != nullptr;) {
      Block* next = b->next;
      delete b;
      b = next;
    }
  }
}

std::size_t CachingAllocator::round_size(std::size_t nbytes) {
  return nbytes < kMinBlockSize ? kMinBlockSize : round_up(nbytes, kMinBlockSize);
}

std::size_t CachingAllocator::segment_size(std::size_t rounded) {
  if (rounded <= kSmallSize) return kSmallSegment;
  if (rounded < kMinLargeAlloc) return kLargeSegment;
  return round_up(rounded, kLargeRounding);
}

std::string CachingAllocator::name() const {
  return backend_->name();
}

CachingAllocator::Pool& CachingAllocator::pool_for(const Block& block) {
  return block.small ? small_pool_ : large_pool_;
}

// The smallest cached block of the right pool and stream holding `size` bytes, taken out of its
// pool; nullptr when there is none.
CachingAllocator::Block* CachingAllocator::find_cached(std::size_t size, Stream stream) {
  Pool& pool = size <= kSmallSize ? small_pool_ : large_pool_;
  Block key;
  key.stream = stream;
  key.size = size;
  const auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* block = *it;
  pool.erase(it);
  return block;
}

// A new segment from the backend holding `size` rounded bytes, as one free block outside any
// pool; nullptr when neither the preferred nor the tight segment size fits.
CachingAllocator::Block* CachingAllocator::allocate_segment(std::size_t size, Stream stream) {
  const bool small = size <= kSmallSize;
  const std::size_t preferred = segment_size(size);
  const std::size_t tight = small ? preferred : round_up(size, kLargeRounding);
  const std::size_t candidates[2] = {preferred, tight};
  const int count = preferred == tight ? 1 : 2;
  for (int i = 0; i < count; ++i) {
    const std::size_t bytes = candidates[i];
    if (cap_ != 0 && (bytes > cap_ || stats_.reserved_bytes > cap_ - bytes)) continue;
    void* ptr = backend_->allocate(bytes);
    if (ptr == nullptr) continue;
    Block* block = nullptr;
    try {
      block = new Block;
      block->addr = reinterpret_cast<std::uintptr_t>(ptr);
      block->size = bytes;
      block->stream = stream;
      block->small = small;
      segments_.insert(block);
    } catch (...) {
      delete block;
      backend_->free(ptr);
      throw;
    }
    ++stats_.backend_allocs;
    ++stats_.segments;
    stats_.reserved_bytes += bytes;
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    return block;
  }
  return nullptr;
}

void* CachingAllocator::allocate(std::size_t nbytes, Stream stream) {
  if (nbytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!caching_) return allocate_uncached(nbytes, stream);
  process_events();

  Block* block = nullptr;
  bool hit = false;
  std::size_t size = 0;
  if (nbytes <= kMaxRequest) {
    size = round_size(nbytes);
    block = find_cached(size, stream);
    hit = block != nullptr;
    if (!block) block = allocate_segment(size, stream);
    if (!block) {
      // Cached segments of other streams or sizes may be all that stands in the way.
      release_cached();
      block = allocate_segment(size, stream);
    }
  }
  if (!block) {
    ++stats_.ooms;
    throw OutOfMemoryError(backend_->name(), nbytes, stats_.allocated_bytes, stats_.reserved_bytes,
                           cap_, backend_->memory_info());
  }

  // Split off the tail as a free block when it is worth keeping.
  const std::size_t remaining = block->size - size;
  if (block->small ? remaining >= kMinBlockSize : remaining > kSmallSize) {
    Block* rest = new Block;
    rest->addr = block->addr + size;
    rest->size = remaining;
    rest->stream = block->stream;
    rest->small = block->small;
    rest->prev = block;
    rest->next = block->next;
    if (block->next) block->next->prev = rest;
    block->next = rest;
    block->size = size;
    pool_for(*rest).insert(rest);
  }

  block->in_use = true;
  block->requested = nbytes;
  live_.emplace(block->addr, block);
  ++stats_.allocations;
  if (hit) ++stats_.cache_hits;
  ++stats_.active_blocks;
  stats_.allocated_bytes += block->size;
  stats_.requested_bytes += nbytes;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  return block->ptr();
}

void CachingAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = live_.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == live_.end()) {
    fail("{}: free of {}, which this allocator did not hand out or has already taken back",
         backend_->name(), ptr);
  }
  Block* block = it->second;
  if (!caching_) {
    free_uncached(block);
    return;
  }
  // Events first: if recording one throws, the block stays handed out and nothing changed.
  std::vector<std::unique_ptr<StreamEvent>> events;
  events.reserve(block->stream_uses.size());
  for (Stream s : block->stream_uses) events.push_back(backend_->record_event(s));
  pending_.reserve(pending_.size() + events.size());

  live_.erase(it);
  --stats_.active_blocks;
  stats_.allocated_bytes -= block->size;
  stats_.requested_bytes -= block->requested;
  block->requested = 0;
  block->stream_uses.clear();
  if (events.empty()) {
    release_block(block);
    return;
  }
  block->pending_events = events.size();
  ++stats_.pending_free_blocks;
  for (auto& event : events) pending_.push_back(PendingFree{std::move(event), block});
}

// Caching off: one backend allocation of exactly nbytes per request, a segment of one block.
void* CachingAllocator::allocate_uncached(std::size_t nbytes, Stream stream) {
  void* ptr = nullptr;
  const bool over_cap = cap_ != 0 && (nbytes > cap_ || stats_.reserved_bytes > cap_ - nbytes);
  if (!over_cap && nbytes <= kMaxRequest) ptr = backend_->allocate(nbytes);
  if (ptr == nullptr) {
    ++stats_.ooms;
    throw OutOfMemoryError(backend_->name(), nbytes, stats_.allocated_bytes, stats_.reserved_bytes,
                           cap_, backend_->memory_info());
  }
  Block* block = nullptr;
  try {
    block = new Block;
    block->addr = reinterpret_cast<std::uintptr_t>(ptr);
    block->size = nbytes;
    block->stream = stream;
    block->small = nbytes <= kSmallSize;
    block->in_use = true;
    block->requested = nbytes;
    segments_.insert(block);
    live_.emplace(block->addr, block);
  } catch (...) {
    if (block) segments_.erase(block);
    delete block;
    backend_->free(ptr);
    throw;
  }
  ++stats_.backend_allocs;
  ++stats_.segments;
  stats_.reserved_bytes += nbytes;
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  ++stats_.allocations;
  ++stats_.active_blocks;
  stats_.allocated_bytes += nbytes;
  stats_.requested_bytes += nbytes;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  return ptr;
}

// Caching off: waits for the other streams that used the block, then gives it to the backend.
void CachingAllocator::free_uncached(Block* block) {
  // Events first: if recording or waiting throws, the block stays handed out.
  for (Stream s : block->stream_uses) backend_->record_event(s)->synchronize();
  live_.erase(block->addr);
  segments_.erase(block);
  --stats_.active_blocks;
  stats_.allocated_bytes -= block->size;
  stats_.requested_bytes -= block->requested;
  --stats_.segments;
  stats_.reserved_bytes -= block->size;
  ++stats_.backend_frees;
  void* ptr = block->ptr();
  delete block;
  backend_->free(ptr);
}

// Puts a block nobody uses any more back in its pool, merged with free neighbours.
void CachingAllocator::release_block(Block* block) {
  block->in_use = false;
  Pool& pool = pool_for(*block);
  if (Block* prev = block->prev; prev != nullptr && !prev->in_use) {
    pool.erase(prev);  // before its size (the set key) changes
    prev->size += block->size;
    prev->next = block->next;
    if (block->next) block->next->prev = prev;
    delete block;
    block = prev;
  }
  if (Block* next = block->next; next != nullptr && !next->in_use) {
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next) next->next->prev = block;
    delete next;
  }
  pool.insert(block);
}

// Returns blocks whose events have all completed to the cache. Never blocks.
void CachingAllocator::process_events() {
  for (std::size_t i = 0; i < pending_.size();) {
    if (!pending_[i].event->ready()) {
      ++i;
      continue;
    }
    Block* block = pending_[i].block;
    if (i + 1 != pending_.size()) pending_[i] = std::move(pending_.back());
    pending_.pop_back();
    if (--block->pending_events == 0) {
      --stats_.pending_free_blocks;
      release_block(block);
    }
  }
}

// Waits for every pending event, then gives every fully free segment back to the backend.
void CachingAllocator::release_cached() {
  while (!pending_.empty()) {
    pending_.back().event->synchronize();
    Block* block = pending_.back().block;
    pending_.pop_back();
    if (--block->pending_events == 0) {
      --stats_.pending_free_blocks;
      release_block(block);
    }
  }
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* block = *it;
      if (block->prev != nullptr || block->next != nullptr) {
        ++it;
        continue;
      }
      backend_->free(block->ptr());
      ++stats_.backend_frees;
      --stats_.segments;
      stats_.reserved_bytes -= block->size;
      segments_.erase(block);
      it = pool->erase(it);
      delete block;
    }
  }
}

CachingAllocator::Block* CachingAllocator::find_live(const void* ptr) const {
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  auto it = live_.upper_bound(addr);
  if (it == live_.begin()) return nullptr;
  --it;
  Block* block = it->second;
  return addr < block->addr + block->size ? block : nullptr;
}

void CachingAllocator::record_stream(const void* ptr, Stream stream) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  Block* block = find_live(ptr);
  if (!block) {
    fail("{}: record_stream on {}, which is not in a block handed out by this allocator",
         backend_->name(), ptr);
  }
  if (stream == block->stream) return;
  if (std::find(block->stream_uses.begin(), block->stream_uses.end(), stream) ==
      block->stream_uses.end()) {
    block->stream_uses.push_back(stream);
  }
}

bool CachingAllocator::owns(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ptr != nullptr && find_live(ptr) != nullptr;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

void CachingAllocator::set_memory_cap(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  cap_ = bytes;
}

std::size_t CachingAllocator::memory_cap() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cap_;
}

bool cuda_memory_caching_disabled_by_env() {
  const char* value = std::getenv("PLAYBOOK_NO_CUDA_MEMORY_CACHING");
  return value != nullptr && value[0] != '\0' && std::string_view(value) != "0";
}

// ---- the CUDA device instances ------------------------------------------------------------------

#ifdef PB_WITH_CUDA

namespace {

class CudaStreamEvent final : public StreamEvent {
 public:
  CudaStreamEvent(Device device, Stream stream) : event_(device) { event_.record(stream); }
  bool ready() override { return event_.query(); }
  void synchronize() override { event_.synchronize(); }

 private:
  Event event_;
};

class CudaDeviceBackend final : public AllocatorBackend {
 public:
  explicit CudaDeviceBackend(Device device) : device_(device) {}

  void* allocate(std::size_t nbytes) override {
    DeviceGuard guard(device_);
    void* ptr = nullptr;
    const cudaError_t status = cudaMalloc(&ptr, nbytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it so the next check does not see it
      return nullptr;
    }
    if (status != cudaSuccess)
      throw CudaError(status, "cudaMalloc(&ptr, nbytes)", __FILE__, __LINE__);
    return ptr;
  }

  void free(void* ptr) override {
    DeviceGuard guard(device_);
    PB_CUDA_CHECK(cudaFree(ptr));
  }

  std::unique_ptr<StreamEvent> record_event(Stream stream) override {
    return std::make_unique<CudaStreamEvent>(device_, stream);
  }

  std::string name() const override { return device_.str(); }

  std::string memory_info() const override {
    try {
      DeviceGuard guard(device_);
      std::size_t free_bytes = 0;
      std::size_t total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return {};
      }
      return fmt::format("the device has {} free of {}", format_bytes(free_bytes),
                         format_bytes(total_bytes));
    } catch (...) {
      return {};
    }
  }

 private:
  Device device_;
};

}  // namespace

CachingAllocator& allocator(Device device) {
  check_cuda_device(device);
  // One slot per visible device, filled on first use; never freed (tensors in static storage may
  // return memory after main returns).
  static std::atomic<CachingAllocator*>* slots =
      new std::atomic<CachingAllocator*>[static_cast<std::size_t>(cuda_device_count())]();
  static std::mutex create_mutex;
  std::atomic<CachingAllocator*>& slot = slots[device.index];
  CachingAllocator* instance = slot.load(std::memory_order_acquire);
  if (instance) return *instance;
  std::lock_guard<std::mutex> lock(create_mutex);
  instance = slot.load(std::memory_order_relaxed);
  if (!instance) {
    const bool caching = !cuda_memory_caching_disabled_by_env();
    if (!caching) {
      std::fprintf(stderr,
                   "playbook: PLAYBOOK_NO_CUDA_MEMORY_CACHING is set: %s memory is allocated and "
                   "freed with cudaMalloc/cudaFree for every tensor (no caching)\n",
                   device.str().c_str());
    }
    instance = new CachingAllocator(std::make_unique<CudaDeviceBackend>(device), caching);
    slot.store(instance, std::memory_order_release);
  }
  return *instance;
}

#else  // CPU-only build

CachingAllocator& allocator(Device device) {
  check_cuda_device(device);
  fail<NotImplementedError>("allocator({}): playbook was built without CUDA", device.str());
}

#endif  // PB_WITH_CUDA

}  // namespace pb::device
