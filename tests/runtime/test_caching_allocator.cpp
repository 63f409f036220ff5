// The caching allocator's logic on the CPU, with a fake backend that counts its calls and hands
// out fake addresses (never dereferenced) or, for the thread test, real host memory; and fake
// stream events whose completion the test controls. See runtime/device/caching_allocator.h for
// the size classes and the stream policy checked here.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/device/caching_allocator.h"
#include "runtime/device/cuda_device.h"
#include "runtime/device/pinned.h"

namespace pb::device {
namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t GiB = 1024 * MiB;

// Opaque stream handles: the allocator only compares them.
Stream fake_stream(std::uintptr_t id) {
  return reinterpret_cast<Stream>(id * 4096);
}
const Stream kStreamA = fake_stream(1);
const Stream kStreamB = fake_stream(2);
const Stream kStreamC = fake_stream(3);

// What the fake backend saw, shared with the test after the allocator takes the backend.
struct FakeState {
  std::size_t capacity = 0;  // backend memory limit (0: none); beyond it allocate returns nullptr
  bool real_memory = false;  // malloc'd memory instead of fake addresses
  int allocate_calls = 0;
  int failed_allocates = 0;
  int free_calls = 0;
  std::size_t live_bytes = 0;
  std::vector<std::size_t> allocated_sizes;
  std::uintptr_t next_address = 0x10000000;
  std::map<std::uintptr_t, std::size_t> live;  // segment address -> size
  struct RecordedEvent {
    Stream stream;
    std::shared_ptr<bool> done;
  };
  std::vector<RecordedEvent> events;
  int synchronize_calls = 0;

  // Completes every event recorded on `stream` so far.
  void complete(Stream stream) {
    for (RecordedEvent& e : events) {
      if (e.stream == stream) *e.done = true;
    }
  }
  int events_on(Stream stream) const {
    int n = 0;
    for (const RecordedEvent& e : events) n += e.stream == stream ? 1 : 0;
    return n;
  }
};

class FakeEvent final : public StreamEvent {
 public:
  FakeEvent(std::shared_ptr<bool> done, FakeState* state) : done_(std::move(done)), state_(state) {}
  bool ready() override { return *done_; }
  void synchronize() override {
    ++state_->synchronize_calls;
    *done_ = true;
  }

 private:
  std::shared_ptr<bool> done_;
  FakeState* state_;
};

class FakeBackend final : public AllocatorBackend {
 public:
  explicit FakeBackend(std::shared_ptr<FakeState> state) : state_(std::move(state)) {}

  void* allocate(std::size_t nbytes) override {
    FakeState& s = *state_;
    ++s.allocate_calls;
    if (s.capacity != 0 && s.live_bytes + nbytes > s.capacity) {
      ++s.failed_allocates;
      return nullptr;
    }
    std::uintptr_t address = 0;
    if (s.real_memory) {
      address = reinterpret_cast<std::uintptr_t>(std::malloc(nbytes));
    } else {
      // Consecutive segments touch, so a merge across segments would show.
      address = s.next_address;
      s.next_address += nbytes;
    }
    s.live[address] = nbytes;
    s.live_bytes += nbytes;
    s.allocated_sizes.push_back(nbytes);
    return reinterpret_cast<void*>(address);
  }

  void free(void* ptr) override {
    FakeState& s = *state_;
    ++s.free_calls;
    const auto it = s.live.find(reinterpret_cast<std::uintptr_t>(ptr));
    ASSERT_NE(it, s.live.end()) << "the allocator freed a pointer the backend did not hand out";
    s.live_bytes -= it->second;
    s.live.erase(it);
    if (s.real_memory) std::free(ptr);
  }

  std::unique_ptr<StreamEvent> record_event(Stream stream) override {
    auto done = std::make_shared<bool>(false);
    state_->events.push_back({stream, done});
    return std::make_unique<FakeEvent>(done, state_.get());
  }

  std::string name() const override { return "fake:0"; }
  std::string memory_info() const override { return "fake has no more"; }

 private:
  std::shared_ptr<FakeState> state_;
};

struct Fixture {
  std::shared_ptr<FakeState> state = std::make_shared<FakeState>();
  std::unique_ptr<CachingAllocator> alloc =
      std::make_unique<CachingAllocator>(std::make_unique<FakeBackend>(state));
};

std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// ---- size classes ---------------------------------------------------------------------------

TEST(CachingAllocator, RoundsRequestsToMultiplesOf512Bytes) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(MiB), MiB);
  EXPECT_EQ(CachingAllocator::round_size(MiB + 1), MiB + 512);
  EXPECT_EQ(CachingAllocator::round_size(3 * MiB + 100), 3 * MiB + 512);
}

TEST(CachingAllocator, SegmentSizesPerPool) {
  EXPECT_EQ(CachingAllocator::segment_size(512), 2 * MiB);         // small pool
  EXPECT_EQ(CachingAllocator::segment_size(MiB), 2 * MiB);         // small pool, largest
  EXPECT_EQ(CachingAllocator::segment_size(MiB + 512), 20 * MiB);  // large, under 10 MiB
  EXPECT_EQ(CachingAllocator::segment_size(10 * MiB - 512), 20 * MiB);
  EXPECT_EQ(CachingAllocator::segment_size(10 * MiB), 10 * MiB);  // rounded to 2 MiB
  EXPECT_EQ(CachingAllocator::segment_size(11 * MiB), 12 * MiB);
  EXPECT_EQ(CachingAllocator::segment_size(GiB + 1), GiB + 2 * MiB);
}

TEST(CachingAllocator, SmallRequestsShareOneTwoMiBSegment) {
  Fixture f;
  void* a = f.alloc->allocate(100, kStreamA);
  void* b = f.alloc->allocate(1000, kStreamA);
  void* c = f.alloc->allocate(MiB, kStreamA);
  EXPECT_EQ(f.state->allocate_calls, 1);
  ASSERT_EQ(f.state->allocated_sizes, std::vector<std::size_t>{2 * MiB});
  // Cut in order from the front of the segment.
  EXPECT_EQ(addr(b), addr(a) + 512);
  EXPECT_EQ(addr(c), addr(a) + 512 + 1024);
  const AllocatorStats s = f.alloc->stats();
  EXPECT_EQ(s.allocated_bytes, 512 + 1024 + MiB);
  EXPECT_EQ(s.requested_bytes, 100 + 1000 + MiB);
  EXPECT_EQ(s.reserved_bytes, 2 * MiB);
  EXPECT_EQ(s.segments, 1u);
  EXPECT_EQ(s.active_blocks, 3u);
  EXPECT_EQ(s.cache_hits, 2u);  // b and c came from the cached tail of a's segment
  for (void* p : {a, b, c}) f.alloc->free(p);
}

TEST(CachingAllocator, ZeroBytesIsNullAndCountsNothing) {
  Fixture f;
  EXPECT_EQ(f.alloc->allocate(0, kStreamA), nullptr);
  f.alloc->free(nullptr);
  EXPECT_EQ(f.alloc->stats().allocations, 0u);
  EXPECT_EQ(f.state->allocate_calls, 0);
}

// ---- reuse ------------------------------------------------------------------------------------

TEST(CachingAllocator, ReusesAFreedBlockWithoutCallingTheBackend) {
  Fixture f;
  void* p = f.alloc->allocate(4000, kStreamA);
  f.alloc->free(p);
  void* q = f.alloc->allocate(4000, kStreamA);
  EXPECT_EQ(q, p);
  void* big = f.alloc->allocate(64 * MiB, kStreamA);
  f.alloc->free(big);
  void* big2 = f.alloc->allocate(64 * MiB - 1000, kStreamA);  // fits; 512 B too few to split
  EXPECT_EQ(big2, big);
  EXPECT_EQ(f.state->allocate_calls, 2);
  EXPECT_EQ(f.state->free_calls, 0);
  const AllocatorStats s = f.alloc->stats();
  EXPECT_EQ(s.allocations, 4u);
  EXPECT_EQ(s.cache_hits, 2u);
  EXPECT_EQ(s.backend_allocs, 2u);
  EXPECT_EQ(s.backend_frees, 0u);
  f.alloc->free(q);
  f.alloc->free(big2);
}

TEST(CachingAllocator, LargePoolIsBestFitWithSplittingAndMerging) {
  Fixture f;
  void* a = f.alloc->allocate(2 * MiB, kStreamA);  // from a 20 MiB segment
  void* b = f.alloc->allocate(3 * MiB, kStreamA);
  void* c = f.alloc->allocate(4 * MiB, kStreamA);
  EXPECT_EQ(f.state->allocated_sizes, std::vector<std::size_t>{20 * MiB});
  EXPECT_EQ(addr(b), addr(a) + 2 * MiB);
  EXPECT_EQ(addr(c), addr(b) + 3 * MiB);
  // Free 3 MiB hole between a and c; the 11 MiB tail is also free. Best fit takes the hole.
  f.alloc->free(b);
  void* d = f.alloc->allocate(2 * MiB + MiB / 2, kStreamA);
  EXPECT_EQ(d, b);
  // The 0.5 MiB left in the hole is not split off (large-pool remainders must exceed 1 MiB).
  EXPECT_EQ(f.alloc->stats().allocated_bytes, 2 * MiB + 3 * MiB + 4 * MiB);
  // Freeing everything merges the segment back into one block: it serves 20 MiB from the cache.
  for (void* p : {a, c, d}) f.alloc->free(p);
  void* whole = f.alloc->allocate(20 * MiB, kStreamA);
  EXPECT_EQ(whole, a);
  EXPECT_EQ(f.state->allocate_calls, 1);
  f.alloc->free(whole);
}

TEST(CachingAllocator, DoesNotSplitSmallRemaindersOffLargeBlocks) {
  Fixture f;
  // 13.5 MiB rounds into a 14 MiB segment; the 0.5 MiB left over stays with the block.
  void* p = f.alloc->allocate(13 * MiB + MiB / 2, kStreamA);
  EXPECT_EQ(f.state->allocated_sizes, std::vector<std::size_t>{14 * MiB});
  EXPECT_EQ(f.alloc->stats().allocated_bytes, 14 * MiB);
  f.alloc->free(p);
  // 12 MiB + 512 B in a 14 MiB segment: the ~2 MiB left over is split off and cached.
  void* q = f.alloc->allocate(12 * MiB + 1, kStreamA);
  EXPECT_EQ(q, p);  // reuses the cached 14 MiB segment
  EXPECT_EQ(f.alloc->stats().allocated_bytes, 12 * MiB + 512);
  f.alloc->free(q);
}

TEST(CachingAllocator, SmallAndLargePoolsDoNotShareBlocks) {
  Fixture f;
  void* big = f.alloc->allocate(4 * MiB, kStreamA);
  f.alloc->free(big);
  void* small = f.alloc->allocate(1000, kStreamA);  // the cached 20 MiB block is large-pool
  EXPECT_EQ(f.state->allocated_sizes, (std::vector<std::size_t>{20 * MiB, 2 * MiB}));
  EXPECT_NE(small, big);
  f.alloc->free(small);
}

TEST(CachingAllocator, SegmentsNeverMergeEvenWhenAdjacent) {
  Fixture f;
  void* a = f.alloc->allocate(MiB, kStreamA);
  void* b = f.alloc->allocate(MiB, kStreamA);
  void* c = f.alloc->allocate(MiB, kStreamA);  // a second segment, right after the first
  EXPECT_EQ(f.state->allocate_calls, 2);
  for (void* p : {a, b, c}) f.alloc->free(p);
  f.alloc->empty_cache();
  EXPECT_EQ(f.state->free_calls, 2);  // two segments returned, each as the backend gave it
  EXPECT_EQ(f.state->live_bytes, 0u);
}

// ---- statistics -------------------------------------------------------------------------------

TEST(CachingAllocator, StatisticsAreExact) {
  Fixture f;
  void* a = f.alloc->allocate(3000, kStreamA);          // 3072 B, 2 MiB segment
  void* c = f.alloc->allocate(12 * MiB + 1, kStreamA);  // 12 MiB + 512 B, 14 MiB segment
  // c's 2 MiB - 512 B tail is too small for b: a new 20 MiB segment.
  void* b = f.alloc->allocate(5 * MiB, kStreamA);
  AllocatorStats s = f.alloc->stats();
  const std::size_t all = 3072 + 5 * MiB + 12 * MiB + 512;
  EXPECT_EQ(s.allocated_bytes, all);
  EXPECT_EQ(s.peak_allocated_bytes, all);
  EXPECT_EQ(s.requested_bytes, 3000 + 5 * MiB + 12 * MiB + 1);
  EXPECT_EQ(s.reserved_bytes, 2 * MiB + 20 * MiB + 14 * MiB);
  EXPECT_EQ(s.peak_reserved_bytes, 36 * MiB);
  EXPECT_EQ(s.active_blocks, 3u);
  EXPECT_EQ(s.segments, 3u);
  EXPECT_EQ(s.allocations, 3u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.backend_allocs, 3u);

  f.alloc->free(b);
  s = f.alloc->stats();
  EXPECT_EQ(s.allocated_bytes, all - 5 * MiB);
  EXPECT_EQ(s.peak_allocated_bytes, all);
  EXPECT_EQ(s.reserved_bytes, 36 * MiB);  // cached, still reserved
  EXPECT_EQ(s.active_blocks, 2u);

  f.alloc->reset_peak();
  s = f.alloc->stats();
  EXPECT_EQ(s.peak_allocated_bytes, all - 5 * MiB);
  EXPECT_EQ(s.peak_reserved_bytes, 36 * MiB);

  // Too big for c's cached 2 MiB - 512 B tail: best fit is b's cached 20 MiB segment.
  void* d = f.alloc->allocate(3 * MiB, kStreamA);
  s = f.alloc->stats();
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.backend_allocs, 3u);
  EXPECT_EQ(s.peak_allocated_bytes, all - 5 * MiB + 3 * MiB);

  f.alloc->empty_cache();  // nothing fully free: every segment still has a live block
  EXPECT_EQ(f.alloc->stats().backend_frees, 0u);
  f.alloc->free(d);
  f.alloc->empty_cache();  // b's segment is free now
  s = f.alloc->stats();
  EXPECT_EQ(s.backend_frees, 1u);
  EXPECT_EQ(s.reserved_bytes, 16 * MiB);
  EXPECT_EQ(s.segments, 2u);
  f.alloc->free(a);
  f.alloc->free(c);
  f.alloc->empty_cache();
  s = f.alloc->stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.segments, 0u);
  EXPECT_EQ(s.backend_frees, 3u);
  EXPECT_EQ(f.state->live_bytes, 0u);
}

TEST(CachingAllocator, DestructorReturnsCachedSegments) {
  Fixture f;
  f.alloc->free(f.alloc->allocate(100, kStreamA));
  f.alloc->free(f.alloc->allocate(30 * MiB, kStreamA));
  f.alloc.reset();
  EXPECT_EQ(f.state->free_calls, 2);
  EXPECT_EQ(f.state->live_bytes, 0u);
}

// ---- streams ----------------------------------------------------------------------------------

TEST(CachingAllocator, AFreedBlockIsReusedOnlyOnItsOwnStream) {
  Fixture f;
  void* a = f.alloc->allocate(MiB, kStreamA);
  f.alloc->free(a);
  void* b = f.alloc->allocate(MiB, kStreamB);  // A's cached segment is not B's to take
  EXPECT_NE(b, a);
  EXPECT_EQ(f.state->allocate_calls, 2);
  void* a2 = f.alloc->allocate(MiB, kStreamA);
  EXPECT_EQ(a2, a);
  EXPECT_EQ(f.state->allocate_calls, 2);
  EXPECT_TRUE(f.state->events.empty());  // same-stream reuse needs no event
  f.alloc->free(a2);
  f.alloc->free(b);
}

TEST(CachingAllocator, CrossStreamUseBlocksReuseUntilTheEventCompletes) {
  Fixture f;
  void* p = f.alloc->allocate(512, kStreamA);
  f.alloc->record_stream(p, kStreamA);  // its own stream: nothing to track
  f.alloc->record_stream(static_cast<char*>(p) + 100, kStreamB);  // interior pointers count
  f.alloc->record_stream(p, kStreamB);                            // recorded once
  f.alloc->free(p);
  ASSERT_EQ(f.state->events.size(), 1u);
  EXPECT_EQ(f.state->events_on(kStreamB), 1);
  EXPECT_EQ(f.alloc->stats().pending_free_blocks, 1u);
  EXPECT_EQ(f.alloc->stats().allocated_bytes, 0u);  // freed by the caller already

  // B may still be using p: a request on A gets other memory.
  void* q = f.alloc->allocate(512, kStreamA);
  EXPECT_NE(q, p);
  EXPECT_EQ(addr(q), addr(p) + 512);  // the segment's free tail, no backend call
  EXPECT_EQ(f.state->allocate_calls, 1);

  f.state->complete(kStreamB);
  void* r = f.alloc->allocate(512, kStreamA);  // the event is polled here
  EXPECT_EQ(r, p);
  EXPECT_EQ(f.alloc->stats().pending_free_blocks, 0u);
  f.alloc->free(q);
  f.alloc->free(r);
}

TEST(CachingAllocator, WaitsForEveryStreamThatUsedTheBlock) {
  Fixture f;
  void* p = f.alloc->allocate(2 * MiB, kStreamA);
  f.alloc->record_stream(p, kStreamB);
  f.alloc->record_stream(p, kStreamC);
  f.alloc->free(p);
  EXPECT_EQ(f.state->events.size(), 2u);
  f.state->complete(kStreamB);
  void* q = f.alloc->allocate(2 * MiB, kStreamA);
  EXPECT_NE(q, p);  // C has not finished
  f.state->complete(kStreamC);
  void* r = f.alloc->allocate(2 * MiB, kStreamA);
  EXPECT_EQ(r, p);
  EXPECT_EQ(f.state->allocate_calls, 1);  // all three from one 20 MiB segment
  f.alloc->free(q);
  f.alloc->free(r);
}

TEST(CachingAllocator, StreamUsesAreForgottenWhenTheBlockIsReused) {
  Fixture f;
  void* p = f.alloc->allocate(512, kStreamA);
  f.alloc->record_stream(p, kStreamB);
  f.alloc->free(p);
  f.state->complete(kStreamB);
  void* q = f.alloc->allocate(512, kStreamA);
  ASSERT_EQ(q, p);
  f.alloc->free(q);  // no record_stream this time: straight back to the cache
  EXPECT_EQ(f.state->events.size(), 1u);
  EXPECT_EQ(f.alloc->allocate(512, kStreamA), p);
  f.alloc->free(p);
}

TEST(CachingAllocator, EmptyCacheWaitsForPendingEvents) {
  Fixture f;
  void* p = f.alloc->allocate(512, kStreamA);
  f.alloc->record_stream(p, kStreamB);
  f.alloc->free(p);
  f.alloc->empty_cache();
  EXPECT_EQ(f.state->synchronize_calls, 1);
  EXPECT_EQ(f.state->free_calls, 1);
  EXPECT_EQ(f.alloc->stats().reserved_bytes, 0u);
  EXPECT_EQ(f.alloc->stats().pending_free_blocks, 0u);
}

// ---- errors -----------------------------------------------------------------------------------

TEST(CachingAllocator, CapMakesLargerRequestsFailAsOutOfMemory) {
  Fixture f;
  f.alloc->set_memory_cap(4 * MiB);
  EXPECT_EQ(f.alloc->memory_cap(), 4 * MiB);
  // The preferred 20 MiB segment is over the cap; the tight 4 MiB one fits.
  void* p = f.alloc->allocate(2 * MiB + MiB / 2, kStreamA);
  EXPECT_EQ(f.state->allocated_sizes, std::vector<std::size_t>{4 * MiB});
  try {
    f.alloc->allocate(GiB, kStreamA);
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(std::string(e.what()),
              "fake:0 out of memory: tried to allocate 1.00 GiB; 2.50 MiB allocated, 4.00 MiB "
              "reserved by playbook (cap 4.00 MiB); fake has no more");
    EXPECT_EQ(e.where(), "fake:0");
    EXPECT_EQ(e.requested(), GiB);
    EXPECT_EQ(e.allocated(), 2 * MiB + MiB / 2);
    EXPECT_EQ(e.reserved(), 4 * MiB);
    EXPECT_EQ(e.cap(), 4 * MiB);
  }
  EXPECT_EQ(f.state->allocate_calls, 1);  // the cap refused it before the backend was asked
  EXPECT_EQ(f.alloc->stats().ooms, 1u);
  // Still usable afterwards, and the OOM is a pb::Error for generic handlers.
  EXPECT_THROW(f.alloc->allocate(2 * MiB, kStreamA), Error);
  f.alloc->free(p);
  f.alloc->set_memory_cap(0);
  void* q = f.alloc->allocate(GiB, kStreamA);
  EXPECT_NE(q, nullptr);
  f.alloc->free(q);
}

TEST(CachingAllocator, CapCountsCachedMemoryAndEmptiesTheCacheToMakeRoom) {
  Fixture f;
  f.alloc->free(f.alloc->allocate(100, kStreamB));  // 2 MiB cached for stream B
  f.alloc->set_memory_cap(10 * MiB);
  void* p = f.alloc->allocate(10 * MiB, kStreamA);  // fits only once B's segment is returned
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(f.state->free_calls, 1);
  EXPECT_EQ(f.alloc->stats().reserved_bytes, 10 * MiB);
  f.alloc->free(p);
}

TEST(CachingAllocator, RetriesOnceAfterEmptyingTheCacheWhenTheBackendFails) {
  Fixture f;
  f.state->capacity = 23 * MiB;
  f.alloc->free(f.alloc->allocate(1000, kStreamA));  // 2 MiB segment, cached
  void* p = f.alloc->allocate(22 * MiB, kStreamA);   // 2 + 22 > 23: fails, cache emptied, retried
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(f.state->allocate_calls, 3);
  EXPECT_EQ(f.state->failed_allocates, 1);
  EXPECT_EQ(f.state->free_calls, 1);
  const AllocatorStats s = f.alloc->stats();
  EXPECT_EQ(s.backend_allocs, 2u);
  EXPECT_EQ(s.backend_frees, 1u);
  EXPECT_EQ(s.ooms, 0u);
  EXPECT_EQ(s.reserved_bytes, 22 * MiB);
  f.alloc->free(p);
}

TEST(CachingAllocator, TriesATightSegmentBeforeGivingUp) {
  Fixture f;
  f.state->capacity = 6 * MiB;
  void* p = f.alloc->allocate(5 * MiB, kStreamA);  // 20 MiB refused by the backend, then 6 MiB
  EXPECT_EQ(f.state->allocated_sizes, std::vector<std::size_t>{6 * MiB});
  EXPECT_EQ(f.state->failed_allocates, 1);
  f.alloc->free(p);
}

TEST(CachingAllocator, OutOfMemoryWhenEmptyingTheCacheDoesNotHelp) {
  Fixture f;
  f.state->capacity = 8 * MiB;
  void* p = f.alloc->allocate(4 * MiB, kStreamA);  // tight: 4 MiB
  try {
    f.alloc->allocate(6 * MiB, kStreamA);
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(std::string(e.what()),
              "fake:0 out of memory: tried to allocate 6.00 MiB; 4.00 MiB allocated, 4.00 MiB "
              "reserved by playbook; fake has no more");
    EXPECT_EQ(e.cap(), 0u);
  }
  // 20 MiB and 6 MiB tried, the cache emptied (nothing in it), both tried again.
  EXPECT_EQ(f.state->failed_allocates, 1 + 4);
  EXPECT_EQ(f.alloc->stats().ooms, 1u);
  f.alloc->free(p);
}

TEST(CachingAllocator, AbsurdRequestIsOutOfMemory) {
  Fixture f;
  EXPECT_THROW(f.alloc->allocate(SIZE_MAX - 5, kStreamA), OutOfMemoryError);
  EXPECT_EQ(f.state->allocate_calls, 0);
}

TEST(CachingAllocator, FreeOfAForeignOrFreedPointerThrows) {
  Fixture f;
  int local = 0;
  EXPECT_THROW(f.alloc->free(&local), ValueError);
  void* p = f.alloc->allocate(100, kStreamA);
  EXPECT_THROW(f.alloc->free(static_cast<char*>(p) + 1), ValueError);  // not a block start
  f.alloc->free(p);
  EXPECT_THROW(f.alloc->free(p), ValueError);
  EXPECT_THROW(f.alloc->record_stream(p, kStreamB), ValueError);
}

TEST(CachingAllocator, OwnsExactlyTheLiveBlocks) {
  Fixture f;
  void* p = f.alloc->allocate(1000, kStreamA);
  EXPECT_TRUE(f.alloc->owns(p));
  EXPECT_TRUE(f.alloc->owns(static_cast<char*>(p) + 1023));   // inside the rounded block
  EXPECT_FALSE(f.alloc->owns(static_cast<char*>(p) + 1024));  // the free tail
  EXPECT_FALSE(f.alloc->owns(nullptr));
  f.alloc->free(p);
  EXPECT_FALSE(f.alloc->owns(p));
}

// ---- caching off (PLAYBOOK_NO_CUDA_MEMORY_CACHING=1, for compute-sanitizer) ---------------------

struct NoCacheFixture {
  std::shared_ptr<FakeState> state = std::make_shared<FakeState>();
  std::unique_ptr<CachingAllocator> alloc =
      std::make_unique<CachingAllocator>(std::make_unique<FakeBackend>(state), false);
};

TEST(CachingAllocatorNoCaching, EveryRequestIsItsOwnExactBackendAllocation) {
  NoCacheFixture f;
  EXPECT_FALSE(f.alloc->caching());
  EXPECT_TRUE(Fixture{}.alloc->caching());
  void* a = f.alloc->allocate(100, kStreamA);
  void* b = f.alloc->allocate(3 * MiB + 1, kStreamA);
  // Exactly the requested bytes: no 512 B rounding, no 2/20 MiB segments.
  EXPECT_EQ(f.state->allocated_sizes, (std::vector<std::size_t>{100, 3 * MiB + 1}));
  AllocatorStats s = f.alloc->stats();
  EXPECT_EQ(s.allocated_bytes, 100 + 3 * MiB + 1);
  EXPECT_EQ(s.requested_bytes, 100 + 3 * MiB + 1);
  EXPECT_EQ(s.reserved_bytes, 100 + 3 * MiB + 1);
  EXPECT_EQ(s.segments, 2u);
  EXPECT_EQ(s.active_blocks, 2u);
  EXPECT_EQ(s.allocations, 2u);
  EXPECT_EQ(s.backend_allocs, 2u);
  EXPECT_TRUE(f.alloc->owns(static_cast<char*>(a) + 99));
  // The fake backend's segments touch: b starts right after a's 100 bytes.
  EXPECT_EQ(addr(b), addr(a) + 100);
  // free() goes straight to the backend; nothing is kept.
  f.alloc->free(a);
  EXPECT_EQ(f.state->free_calls, 1);
  EXPECT_EQ(f.state->live.count(addr(a)), 0u);
  EXPECT_FALSE(f.alloc->owns(a));
  void* c = f.alloc->allocate(100, kStreamA);  // same size again: the backend again
  EXPECT_EQ(f.state->allocate_calls, 3);
  f.alloc->free(b);
  f.alloc->free(c);
  s = f.alloc->stats();
  EXPECT_EQ(f.state->free_calls, 3);
  EXPECT_EQ(f.state->live_bytes, 0u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.backend_frees, 3u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.segments, 0u);
  EXPECT_EQ(s.active_blocks, 0u);
  EXPECT_EQ(s.peak_allocated_bytes, 100 + 3 * MiB + 1);
  // Nothing cached: empty_cache has nothing to return.
  f.alloc->empty_cache();
  EXPECT_EQ(f.state->free_calls, 3);
}

TEST(CachingAllocatorNoCaching, WaitsForOtherStreamsBeforeTheBackendFree) {
  NoCacheFixture f;
  void* p = f.alloc->allocate(4000, kStreamA);
  f.alloc->record_stream(p, kStreamB);
  f.alloc->record_stream(p, kStreamA);  // its own stream: nothing to wait for
  f.alloc->free(p);
  EXPECT_EQ(f.state->events_on(kStreamB), 1);
  EXPECT_EQ(f.state->events_on(kStreamA), 0);
  EXPECT_EQ(f.state->synchronize_calls, 1);  // waited, then freed
  EXPECT_EQ(f.state->free_calls, 1);
  EXPECT_EQ(f.alloc->stats().pending_free_blocks, 0u);
  // The next block of the same address starts with no stream uses.
  void* q = f.alloc->allocate(4000, kStreamA);
  f.alloc->free(q);
  EXPECT_EQ(f.state->synchronize_calls, 1);
}

TEST(CachingAllocatorNoCaching, CapAndBackendFailuresAreOutOfMemory) {
  NoCacheFixture f;
  f.alloc->set_memory_cap(MiB);
  void* p = f.alloc->allocate(MiB / 2, kStreamA);
  try {
    f.alloc->allocate(MiB / 2 + 1, kStreamA);
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(e.requested(), MiB / 2 + 1);
    EXPECT_EQ(e.reserved(), MiB / 2);
    EXPECT_EQ(e.cap(), MiB);
  }
  EXPECT_EQ(f.state->allocate_calls, 1);  // the cap refused it before the backend was asked
  f.alloc->set_memory_cap(0);
  f.state->capacity = MiB;
  EXPECT_THROW(f.alloc->allocate(MiB, kStreamA), OutOfMemoryError);  // the backend said no
  EXPECT_EQ(f.state->failed_allocates, 1);
  EXPECT_THROW(f.alloc->allocate(SIZE_MAX - 5, kStreamA), OutOfMemoryError);
  EXPECT_EQ(f.alloc->stats().ooms, 3u);
  EXPECT_THROW(f.alloc->free(static_cast<char*>(p) + 1), ValueError);
  f.alloc->free(p);
  EXPECT_THROW(f.alloc->free(p), ValueError);
  EXPECT_EQ(f.state->live_bytes, 0u);
}

TEST(CachingAllocatorNoCaching, EnvironmentSwitch) {
  const char* name = "PLAYBOOK_NO_CUDA_MEMORY_CACHING";
  const char* old = std::getenv(name);
  const std::string saved = old ? old : "";
  ASSERT_EQ(::unsetenv(name), 0);
  EXPECT_FALSE(cuda_memory_caching_disabled_by_env());
  ASSERT_EQ(::setenv(name, "1", 1), 0);
  EXPECT_TRUE(cuda_memory_caching_disabled_by_env());
  ASSERT_EQ(::setenv(name, "0", 1), 0);
  EXPECT_FALSE(cuda_memory_caching_disabled_by_env());
  ASSERT_EQ(::setenv(name, "", 1), 0);
  EXPECT_FALSE(cuda_memory_caching_disabled_by_env());
  if (old) {
    ::setenv(name, saved.c_str(), 1);
  } else {
    ::unsetenv(name);
  }
}

// ---- threads ----------------------------------------------------------------------------------

// Threads allocate and free real memory on their own streams (and one shared stream), fill each
// block with their id and check it before freeing: overlapping blocks would clobber each other.
TEST(CachingAllocator, ThreadSafetySmoke) {
  Fixture f;
  f.state->real_memory = true;
  constexpr int kThreads = 4;
  constexpr int kIterations = 3000;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 1);
      std::uniform_int_distribution<std::size_t> small(1, 64 * KiB);
      std::vector<std::pair<unsigned char*, std::size_t>> live;
      const Stream own = fake_stream(10 + static_cast<std::uintptr_t>(t));
      for (int i = 0; i < kIterations; ++i) {
        const std::size_t n = i % 50 == 0 ? 3 * MiB : small(rng);
        const Stream stream = i % 3 == 0 ? kStreamA : own;
        auto* p = static_cast<unsigned char*>(f.alloc->allocate(n, stream));
        std::memset(p, t + 1, n);
        live.emplace_back(p, n);
        if (live.size() > 8 || rng() % 2 == 0) {
          const std::size_t k = rng() % live.size();
          auto [q, m] = live[k];
          for (std::size_t j = 0; j < m; j += 97) failures[t] += q[j] != t + 1 ? 1 : 0;
          failures[t] += q[m - 1] != t + 1 ? 1 : 0;
          f.alloc->free(q);
          live[k] = live.back();
          live.pop_back();
        }
      }
      for (auto [q, m] : live) f.alloc->free(q);
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  AllocatorStats s = f.alloc->stats();
  EXPECT_EQ(s.allocations, static_cast<std::uint64_t>(kThreads * kIterations));
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.active_blocks, 0u);
  f.alloc->empty_cache();  // every segment merged back whole
  s = f.alloc->stats();
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(f.state->live_bytes, 0u);
  EXPECT_EQ(s.backend_frees, s.backend_allocs);
}

// ---- helpers usable in every build ------------------------------------------------------------

TEST(CachingAllocator, FormatsBytesInBinaryUnits) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(2 * MiB), "2.00 MiB");
  EXPECT_EQ(format_bytes(2 * GiB), "2.00 GiB");
  EXPECT_EQ(format_bytes(30 * GiB + GiB / 2), "30.50 GiB");
}

TEST(CachingAllocator, DeviceAllocatorRejectsMissingDevices) {
  // NotImplementedError in a CPU-only build, ValueError (not visible) with CUDA: both pb::Error.
  EXPECT_THROW(allocator(Device::cuda(1000)), Error);
  EXPECT_THROW(allocator(Device::cpu()), Error);
  EXPECT_THROW(compute_stream(Device::cuda(1000)), Error);
}

TEST(CachingAllocator, HostToHostCopyAsyncIsAPlainCopy) {
  const std::vector<int> src = {1, 2, 3, 4};
  std::vector<int> dst(4, 0);
  Event done = copy_async(dst.data(), Device::cpu(), src.data(), Device::cpu(), 4 * sizeof(int));
  EXPECT_FALSE(done.defined());
  EXPECT_TRUE(done.query());
  done.synchronize();
  EXPECT_EQ(dst, src);
}

}  // namespace
}  // namespace pb::device
