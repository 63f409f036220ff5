// Host tensor memory (runtime/device/memory.cpp): large blocks are kept and reused instead of
// being returned to the system, without changing what the statistics, the cap and the poison
// test aid promise.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "runtime/device/errors.h"
#include "runtime/device/memory.h"

namespace pb::device {
namespace {

const Device kCpu = Device::cpu();

TEST(HostMemory, ALargeBlockIsReusedForTheSameSize) {
  const std::size_t n = 3 * 1024 * 1024 + 100;  // over the 1 MiB threshold, not a round size
  const MemoryStats before = memory_stats(kCpu);
  void* a = allocate(n, kCpu);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 64, 0u);
  std::memset(a, 1, n);  // the whole requested size is writable
  EXPECT_EQ(memory_stats(kCpu).allocated_bytes, before.allocated_bytes + (n + 63) / 64 * 64);
  deallocate(a, n, kCpu);
  EXPECT_EQ(memory_stats(kCpu).allocated_bytes, before.allocated_bytes);  // cached is not allocated
  void* b = allocate(n, kCpu);
  EXPECT_EQ(b, a) << "the freed block should serve the next request of its size";
  // Two live blocks of one size are distinct.
  void* c = allocate(n, kCpu);
  EXPECT_NE(c, b);
  deallocate(b, n, kCpu);
  deallocate(c, n, kCpu);
  EXPECT_EQ(memory_stats(kCpu).allocated_bytes, before.allocated_bytes);
}

TEST(HostMemory, AReusedBlockIsPoisonedWhenPoisoningIsOn) {
  const std::size_t n = 2 * 1024 * 1024;
  void* a = allocate(n, kCpu);
  std::memset(a, 0, n);
  deallocate(a, n, kCpu);
  set_poison_allocations(true);
  auto* b = static_cast<unsigned char*>(allocate(n, kCpu));
  set_poison_allocations(false);
  EXPECT_EQ(static_cast<void*>(b), a);
  for (std::size_t i = 0; i < n; i += 4099) ASSERT_EQ(b[i], 0xFF) << "byte " << i;
  EXPECT_EQ(b[n - 1], 0xFF);
  deallocate(b, n, kCpu);
}

TEST(HostMemory, TheCapCountsLiveBlocksOnly) {
  const std::size_t n = 4 * 1024 * 1024;
  void* warm = allocate(n, kCpu);  // leaves a cached block of this size behind
  deallocate(warm, n, kCpu);
  const MemoryStats before = memory_stats(kCpu);
  set_memory_cap(kCpu, before.allocated_bytes + n / 2);
  EXPECT_THROW(allocate(n, kCpu), OutOfMemoryError);  // a cached block does not lift the cap
  set_memory_cap(kCpu, before.allocated_bytes + 2 * n);
  void* a = allocate(n, kCpu);
  EXPECT_EQ(a, warm);
  EXPECT_THROW(allocate(2 * n, kCpu), OutOfMemoryError);
  deallocate(a, n, kCpu);
  set_memory_cap(kCpu, 0);
  EXPECT_EQ(memory_stats(kCpu).allocated_bytes, before.allocated_bytes);
}

}  // namespace
}  // namespace pb::device
