// The CPU kernels' thread pool (kernels/cpu/parallel.h): every index once, any thread count,
// resizing between calls, nested calls inline, and distinct workspace slots.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace pb::kernels::cpu {
namespace {

int hardware_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// Runs parallel_for over [0, n) and checks every index was visited exactly once, in ranges that
// are contiguous and in order across the split.
void check_covers_once(int64_t n) {
  std::vector<std::atomic<int>> visits(static_cast<size_t>(n));
  parallel_for(n, [&](int64_t begin, int64_t end) {
    ASSERT_LE(0, begin);
    ASSERT_LE(begin, end);
    ASSERT_LE(end, n);
    for (int64_t i = begin; i < end; ++i) visits[static_cast<size_t>(i)]++;
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[static_cast<size_t>(i)].load(), 1) << "i=" << i;
}

TEST(CpuPool, EveryIndexOnceForAnyThreadCount) {
  for (int threads : {1, 2, 3, 4}) {
    set_cpu_kernel_threads(threads);
    EXPECT_EQ(cpu_kernel_threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 64, 1001}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " n=" << n);
      check_covers_once(n);
    }
  }
  set_cpu_kernel_threads(hardware_threads());
}

// A pool resized after it has run calls gets workers that must wait for the next call, not
// replay the last one (they used to start as if no call had been made and crashed on it).
TEST(CpuPool, ResizingAfterUseThenRunningAgainWorks) {
  for (int round = 0; round < 20; ++round) {
    set_cpu_kernel_threads(2 + round % 3);
    check_covers_once(100);
    set_cpu_kernel_threads(1 + round % 2);
    check_covers_once(7);
  }
  set_cpu_kernel_threads(hardware_threads());
}

TEST(CpuPool, NestedCallsRunInlineOnTheCallingThread) {
  set_cpu_kernel_threads(3);
  std::atomic<int> inner_ranges{0}, outer_ranges{0};
  parallel_for(3, [&](int64_t begin, int64_t end) {
    outer_ranges++;
    const std::thread::id me = std::this_thread::get_id();
    for (int64_t i = begin; i < end; ++i) {
      parallel_for(10, [&](int64_t b, int64_t e) {
        inner_ranges++;
        EXPECT_EQ(b, 0);
        EXPECT_EQ(e, 10);
        EXPECT_EQ(std::this_thread::get_id(), me);
      });
    }
  });
  EXPECT_EQ(outer_ranges.load(), 3);
  EXPECT_EQ(inner_ranges.load(), 3);
  set_cpu_kernel_threads(hardware_threads());
}

TEST(CpuPool, WorkspaceSlotsAreDistinctAndKeepTheirContents) {
  float* a = workspace<float>(0, 16);
  float* b = workspace<float>(1, 16);
  EXPECT_NE(a, b);
  for (int i = 0; i < 16; ++i) a[i] = static_cast<float>(i);
  EXPECT_EQ(workspace<float>(0, 8), a);  // no growth: the same buffer
  EXPECT_EQ(a[15], 15.0f);
  EXPECT_THROW(workspace<float>(4, 1), std::out_of_range);
}

}  // namespace
}  // namespace pb::kernels::cpu
