// The device layer on a real GPU: properties, streams and events, the caching allocator over
// cudaMalloc (reuse, cross-stream reuse, out of memory), pinned memory with asynchronous copies,
// and tensors moved to and computed on cuda:0. The caching logic itself is tested on the CPU in
// tests/runtime/test_caching_allocator.cpp.
//
// The allocator is shared by every test of this binary, so checks use differences of its stats,
// and tests that compare pointers call empty_cache() first so that no older cached block can be
// the best fit.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "runtime/core/tensor.h"
#include "runtime/device/caching_allocator.h"
#include "runtime/device/cuda_device.h"
#include "runtime/device/memory.h"
#include "runtime/device/pinned.h"
#include "runtime/ops/ops.h"

namespace pb::device {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;
const Device kGpu = Device::cuda(0);

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

// Removes the memory cap when a test ends, whatever happened.
struct CapGuard {
  CachingAllocator& alloc;
  ~CapGuard() { alloc.set_memory_cap(0); }
};

TEST(DeviceCuda, PropertiesAreSane) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(cuda_available());
  const DeviceProperties p = properties(kGpu);
  std::cout << "  " << p.str() << "\n";
  EXPECT_EQ(p.device, kGpu);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GE(p.major, 7);  // CUDA 13 supports Turing and newer
  EXPECT_GT(p.sm_count, 0);
  EXPECT_GT(p.total_memory, GiB);
  EXPECT_GT(p.free_memory, 0u);
  EXPECT_LE(p.free_memory, p.total_memory);
  EXPECT_GT(p.l2_cache_bytes, 0u);
  EXPECT_GE(p.shared_memory_per_block, 48u * 1024);
  EXPECT_GE(p.shared_memory_per_block_optin, p.shared_memory_per_block);
  EXPECT_GE(p.shared_memory_per_sm, p.shared_memory_per_block_optin);
  EXPECT_EQ(p.warp_size, 32);
  EXPECT_EQ(p.max_threads_per_block, 1024);
  EXPECT_GE(p.memory_bus_width_bits, 0);
  EXPECT_GE(p.peak_memory_bandwidth_gbps(), 0.0);
  EXPECT_EQ(p.compute_capability(), std::to_string(p.major) + "." + std::to_string(p.minor));
  EXPECT_THROW(properties(Device::cuda(cuda_device_count())), ValueError);
}

TEST(DeviceCuda, StreamsAreDistinctNonBlockingAndStable) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  cudaStream_t compute = compute_stream(kGpu);
  cudaStream_t copy = copy_stream(kGpu);
  EXPECT_NE(compute, nullptr);
  EXPECT_NE(copy, nullptr);
  EXPECT_NE(compute, copy);
  EXPECT_EQ(compute_stream(kGpu), compute);
  EXPECT_EQ(copy_stream(kGpu), copy);
  for (cudaStream_t s : {compute, copy}) {
    unsigned int flags = 0;
    PB_CUDA_CHECK(cudaStreamGetFlags(s, &flags));
    EXPECT_EQ(flags & cudaStreamNonBlocking, static_cast<unsigned>(cudaStreamNonBlocking));
    int index = -1;
    PB_CUDA_CHECK(cudaStreamGetDevice(s, &index));
    EXPECT_EQ(index, 0);
  }
}

TEST(DeviceCuda, EventsOrderStreamsAndTime) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  Event none;
  EXPECT_TRUE(none.query());
  none.make_stream_wait(compute_stream(kGpu));  // nothing to wait for
  EXPECT_THROW(none.record(compute_stream(kGpu)), Error);

  Event start(kGpu, /*enable_timing=*/true);
  Event end(kGpu, /*enable_timing=*/true);
  const std::size_t bytes = 64 * MiB;
  CachingAllocator& alloc = allocator(kGpu);
  void* a = alloc.allocate(bytes, copy_stream(kGpu));
  start.record(copy_stream(kGpu));
  PB_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, copy_stream(kGpu)));
  end.record(copy_stream(kGpu));
  end.make_stream_wait(compute_stream(kGpu));  // compute waits for the memset
  Event after(kGpu);
  after.record(compute_stream(kGpu));
  after.synchronize();
  EXPECT_TRUE(after.query());
  EXPECT_TRUE(end.query());  // compute waited for it, so it must be done
  EXPECT_GE(start.elapsed_ms(end), 0.0f);
  EXPECT_THROW(after.elapsed_ms(end), Error);  // `after` has no timing
  Event moved = std::move(start);
  EXPECT_TRUE(moved.defined());
  EXPECT_FALSE(start.defined());  // NOLINT(bugprone-use-after-move): moved-from is empty
  alloc.free(a);
}

TEST(DeviceCuda, AllocatorReusesDeviceMemory) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  if (!allocator(kGpu).caching()) GTEST_SKIP() << "PLAYBOOK_NO_CUDA_MEMORY_CACHING is set";
  CachingAllocator& alloc = allocator(kGpu);
  alloc.empty_cache();
  const AllocatorStats before = alloc.stats();
  void* p = alloc.allocate(3 * MiB + 123, compute_stream(kGpu));
  cudaPointerAttributes attributes{};
  PB_CUDA_CHECK(cudaPointerGetAttributes(&attributes, p));
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);
  EXPECT_EQ(attributes.device, 0);
  PB_CUDA_CHECK(cudaMemsetAsync(p, 0, 3 * MiB + 123, compute_stream(kGpu)));
  alloc.free(p);
  void* q = alloc.allocate(3 * MiB + 123, compute_stream(kGpu));
  EXPECT_EQ(q, p);
  const AllocatorStats after = alloc.stats();
  EXPECT_EQ(after.backend_allocs - before.backend_allocs, 1u);
  EXPECT_EQ(after.cache_hits - before.cache_hits, 1u);
  EXPECT_EQ(after.allocated_bytes - before.allocated_bytes, 3 * MiB + 512);
  alloc.free(q);
  synchronize(kGpu);
}

TEST(DeviceCuda, CrossStreamBlockIsReusedAfterItsEventCompletes) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  if (!allocator(kGpu).caching()) GTEST_SKIP() << "PLAYBOOK_NO_CUDA_MEMORY_CACHING is set";
  CachingAllocator& alloc = allocator(kGpu);
  alloc.empty_cache();
  const std::size_t bytes = 37 * MiB;
  void* p = alloc.allocate(bytes, compute_stream(kGpu));
  PB_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, copy_stream(kGpu)));  // used on the copy stream
  alloc.record_stream(p, copy_stream(kGpu));
  alloc.free(p);
  EXPECT_EQ(alloc.stats().pending_free_blocks, 1u);
  synchronize_stream(copy_stream(kGpu));
  void* q = alloc.allocate(bytes, compute_stream(kGpu));  // polls the event: complete now
  EXPECT_EQ(q, p);
  EXPECT_EQ(alloc.stats().pending_free_blocks, 0u);
  alloc.free(q);
}

TEST(DeviceCuda, OutOfMemoryUnderACap) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  CachingAllocator& alloc = allocator(kGpu);
  CapGuard guard{alloc};
  alloc.empty_cache();
  const std::size_t cap = alloc.stats().reserved_bytes + 64 * MiB;
  alloc.set_memory_cap(cap);
  void* fits = alloc.allocate(32 * MiB, compute_stream(kGpu));
  try {
    alloc.allocate(2 * GiB, compute_stream(kGpu));
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("cuda:0 out of memory: tried to allocate 2.00 GiB; ", 0), 0u)
        << message;
    EXPECT_NE(message.find("(cap " + format_bytes(cap) + ")"), std::string::npos) << message;
    EXPECT_EQ(e.where(), "cuda:0");
    EXPECT_EQ(e.requested(), 2 * GiB);
    EXPECT_EQ(e.cap(), cap);
    EXPECT_GE(e.allocated(), 32 * MiB);
    EXPECT_LE(e.reserved(), cap);
  }
  alloc.free(fits);
  // Tensors report it too: a tensor over the cap.
  EXPECT_THROW(pb::empty({static_cast<int64_t>(GiB / 4)}, TensorOptions{}.with_device(kGpu)),
               OutOfMemoryError);
}

TEST(DeviceCuda, OutOfMemoryFromCudaMallocLeavesNoStickyError) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  CachingAllocator& alloc = allocator(kGpu);
  const std::size_t total = properties(kGpu).total_memory;
  try {
    alloc.allocate(total + GiB, compute_stream(kGpu));
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("the device has "), std::string::npos) << message;
    EXPECT_EQ(e.cap(), 0u);
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // The device still works.
  const std::vector<float> x = {1, -2, 3};
  EXPECT_EQ(from_vector(x, {3}).to(kGpu).to_vector<float>(), x);
}

TEST(DeviceCuda, PinnedAsyncCopyRoundTripWithEvents) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t n = 3'000'001;  // odd, and large enough for several DMA chunks
  const std::size_t bytes = n * sizeof(float);
  const std::vector<float> values = random_floats(n, 7);

  PinnedBuffer host_in(bytes);
  PinnedBuffer host_out(bytes);
  cudaPointerAttributes attributes{};
  PB_CUDA_CHECK(cudaPointerGetAttributes(&attributes, host_in.data()));
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost);  // really page-locked
  EXPECT_TRUE(pinned_allocator().owns(host_in.data()));
  std::memcpy(host_in.data(), values.data(), bytes);
  std::memset(host_out.data(), 0xFF, bytes);

  CachingAllocator& alloc = allocator(kGpu);
  // Uploaded on the copy stream, copied on the compute stream, downloaded on the copy stream.
  void* staged = alloc.allocate(bytes, copy_stream(kGpu));
  void* result = alloc.allocate(bytes, compute_stream(kGpu));
  Event uploaded = copy_async(staged, kGpu, host_in.data(), Device::cpu(), bytes);
  host_in = PinnedBuffer();  // freeing it now is safe: reused only after the upload
  uploaded.make_stream_wait(compute_stream(kGpu));
  alloc.record_stream(staged, compute_stream(kGpu));
  PB_CUDA_CHECK(
      cudaMemcpyAsync(result, staged, bytes, cudaMemcpyDeviceToDevice, compute_stream(kGpu)));
  alloc.free(staged);  // still in use on the compute stream: waits for an event
  Event computed(kGpu);
  computed.record(compute_stream(kGpu));
  computed.make_stream_wait(copy_stream(kGpu));
  Event downloaded = copy_async(host_out.data(), Device::cpu(), result, kGpu, bytes);
  downloaded.synchronize();
  EXPECT_TRUE(downloaded.query());
  EXPECT_EQ(std::memcmp(host_out.data(), values.data(), bytes), 0);
  alloc.free(result);

  const AllocatorStats pinned = pinned_allocator().stats();
  EXPECT_GE(pinned.allocated_bytes, bytes);
  EXPECT_GE(pinned.reserved_bytes, pinned.allocated_bytes);
}

TEST(DeviceCuda, TensorToCudaAndBack) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const AllocatorStats before = allocator(kGpu).stats();
  const std::vector<float> values = random_floats(1001, 3);
  {
    const Tensor x = from_vector(values, {7, 11, 13});
    const Tensor g = x.to(kGpu);
    EXPECT_EQ(g.device(), kGpu);
    // Without caching (PLAYBOOK_NO_CUDA_MEMORY_CACHING) blocks are the requested bytes.
    EXPECT_EQ(allocator(kGpu).stats().allocated_bytes - before.allocated_bytes,
              allocator(kGpu).caching() ? CachingAllocator::round_size(1001 * sizeof(float))
                                        : 1001 * sizeof(float));
    EXPECT_TRUE(allocator(kGpu).owns(g.raw_data()));
    const Tensor back = g.to(Device::cpu());
    EXPECT_EQ(back.to_vector<float>(), values);
    EXPECT_EQ(g.clone().to_vector<float>(), values);  // device to device
    const Tensor z = zeros({5, 3}, TensorOptions{}.with_device(kGpu));
    EXPECT_EQ(z.to_vector<float>(), std::vector<float>(15, 0.0f));
  }
  EXPECT_EQ(allocator(kGpu).stats().allocated_bytes, before.allocated_bytes);
}

TEST(DeviceCuda, ReluOnCudaTensorMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : {1, 7, 1000, 1000003}) {
    const std::vector<float> values = random_floats(static_cast<std::size_t>(n), 11);
    const Tensor x = from_vector(values, {n});
    const std::vector<float> cpu = ops::relu(x).to_vector<float>();
    const std::vector<float> gpu = ops::relu(x.to(kGpu)).to_vector<float>();
    ASSERT_EQ(gpu.size(), cpu.size());
    EXPECT_EQ(std::memcmp(gpu.data(), cpu.data(), cpu.size() * sizeof(float)), 0) << "n=" << n;
  }
}

}  // namespace
}  // namespace pb::device
