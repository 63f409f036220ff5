#pragma once
// Shared helpers for the CUDA benchmarks (Google Benchmark with manual timing).
//
// Every CUDA benchmark times with device events around the region (UseManualTime), after a
// warm-up, on inputs filled with random data (never zeros), and reports its distance to a
// ceiling measured in the same run: the vendor library (cuBLAS, cuDNN) for compute-bound
// kernels, the device-to-device copy bandwidth for memory-bound ones.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda/check.h"

namespace pb::bench {

// True when a CUDA device is visible; benchmarks SkipWithError otherwise.
inline bool have_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

// Device buffer of floats, freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count) PB_CUDA_CHECK(cudaMalloc(&ptr_, count * sizeof(float)));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_) {
    o.ptr_ = nullptr;
    o.count_ = 0;
  }
  float* get() const { return static_cast<float*>(ptr_); }
  std::size_t count() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(float); }

 private:
  void* ptr_ = nullptr;
  std::size_t count_ = 0;
};

// Fills a device buffer with uniform random values in [lo, hi) (generated on the host).
void fill_uniform(DeviceBuffer& buffer, uint64_t seed, float lo = -1.0f, float hi = 1.0f);

// Times `fn` (which enqueues work on `stream`) with events: `warmup` untimed calls, then returns
// the median milliseconds of `reps` timed calls.
template <typename Fn>
double median_ms(cudaStream_t stream, Fn&& fn, int warmup = 3, int reps = 20);

// Device-to-device copy bandwidth in GB/s (bytes read + bytes written), measured once per
// process with a 1 GiB copy (several times any L2), cached.
double copy_bandwidth_gbs();

// Runs `fn` per benchmark iteration and sets the iteration time from events.
template <typename Fn>
void run_timed(benchmark::State& state, cudaStream_t stream, Fn&& fn) {
  for (int i = 0; i < 2; ++i) fn();  // warm-up
  PB_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  PB_CUDA_CHECK(cudaEventCreate(&start));
  PB_CUDA_CHECK(cudaEventCreate(&stop));
  for (auto _ : state) {
    PB_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    PB_CUDA_CHECK(cudaEventRecord(stop, stream));
    PB_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PB_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  PB_CUDA_CHECK(cudaEventDestroy(start));
  PB_CUDA_CHECK(cudaEventDestroy(stop));
}

template <typename Fn>
double median_ms(cudaStream_t stream, Fn&& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  PB_CUDA_CHECK(cudaEventCreate(&start));
  PB_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    PB_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    PB_CUDA_CHECK(cudaEventRecord(stop, stream));
    PB_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PB_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  PB_CUDA_CHECK(cudaEventDestroy(start));
  PB_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace pb::bench
