#pragma once
// CUDA devices: discovery and properties, the current device, one compute and one copy stream per
// device, and an RAII event.
//
// Streams. Every device has two non-blocking streams, created on first use and kept for the life
// of the process: the compute stream, on which every kernel, memset and synchronous copy of the
// runtime is enqueued (ops get it through ops::detail::stream_for), and the copy stream for
// asynchronous host<->device transfers that overlap compute (see pinned.h). Non-blocking streams
// do not synchronise with the legacy default stream, so work on them must be ordered with events
// (Event::record on the producer, Event::make_stream_wait on the consumer) or stream syncs; a
// plain cudaMemcpy (legacy default stream) does not wait for them.
//
// This header compiles in both builds. In a CPU-only build every function that needs CUDA throws
// pb::NotImplementedError naming the device; DeviceGuard on a CPU device and a default-constructed
// (empty) Event work everywhere.
#include <cstddef>
#include <string>

#include "kernels/common.h"  // cudaStream_t without the CUDA headers
#include "runtime/core/device.h"

// cuda_runtime.h declares the same alias.
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

namespace pb::device {

// Throws unless `device` is a CUDA device this process can see: ValueError naming the device and
// the number visible, or NotImplementedError in a CPU-only build.
void check_cuda_device(Device device);

// For destructors and other noexcept paths: prints "playbook: warning: <what> failed: <error>" to
// stderr when `status` (a cudaError_t) is not cudaSuccess. Quiet while the CUDA runtime unloads
// at process exit.
void report_cuda_error(const char* what, int status) noexcept;

struct DeviceProperties {
  Device device = Device::cuda(0);
  std::string name;  // "NVIDIA H100 80GB HBM3"
  // Compute capability (9.0 on Hopper).
  int major = 0;
  int minor = 0;
  int sm_count = 0;  // streaming multiprocessors
  // Bytes of device memory, and bytes free when the properties were read.
  std::size_t total_memory = 0;
  std::size_t free_memory = 0;
  std::size_t l2_cache_bytes = 0;
  // Shared memory per block: the default limit (48 KiB), and the most a kernel can opt in to
  // with cudaFuncAttributeMaxDynamicSharedMemorySize; and per multiprocessor.
  std::size_t shared_memory_per_block = 0;
  std::size_t shared_memory_per_block_optin = 0;
  std::size_t shared_memory_per_sm = 0;
  int max_threads_per_block = 0;
  int warp_size = 0;
  // Peak SM and memory clocks in kHz, and the memory bus width; 0 when the device does not say.
  int clock_khz = 0;
  int memory_clock_khz = 0;
  int memory_bus_width_bits = 0;

  // "9.0"
  std::string compute_capability() const;
  // Theoretical DRAM bandwidth, 2 (double data rate) * memory clock * bus width; 0 when unknown.
  double peak_memory_bandwidth_gbps() const;
  // "cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.19 GiB, L2 50.00 MiB, 3352 GB/s)"
  std::string str() const;
};

// Properties of a CUDA device (free_memory is read now; the rest is cached after the first call).
DeviceProperties properties(Device device);

// The calling thread's current CUDA device (cudaGetDevice), and setting it (cudaSetDevice; a no-op
// when it is already current).
Device current_device();
void set_current_device(Device device);

// Makes `device` current for a scope and restores the previous device on exit. A CPU device leaves
// the current CUDA device alone (and needs no CUDA).
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;  // -1: nothing to restore
};

// The device's compute stream and copy stream: non-blocking, created on first use (thread-safe),
// never destroyed. Both are distinct from each other and from the legacy default stream.
cudaStream_t compute_stream(Device device);
// The stream a kernel for `device` launches on: its compute stream, with `device` made current
// (kernels launch on the current device, and a stream only takes kernels of its own device).
// The one entry point for every layer that launches kernels (ops, optim).
cudaStream_t launch_stream(Device device);
cudaStream_t copy_stream(Device device);
// Blocks the host until all work queued on `stream` has finished.
void synchronize_stream(cudaStream_t stream);

// An RAII CUDA event on one device.
//   Event done(device);               // created now (timing disabled unless asked for)
//   done.record(copy_stream(device)); // marks the point after the work queued so far
//   done.make_stream_wait(compute_stream(device));  // later compute work waits for it (no host
//                                                   // block)
//   done.query();  done.synchronize();
// A default-constructed Event is empty: it counts as complete, waiting on it does nothing, and
// recording it throws. Move-only.
class Event {
 public:
  Event() = default;
  explicit Event(Device device, bool enable_timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  bool defined() const { return event_ != nullptr; }
  Device device() const { return device_; }
  cudaEvent_t handle() const { return event_; }

  // Captures the work queued on `stream` so far (the stream must belong to device()).
  void record(cudaStream_t stream);
  // Work queued on `stream` after this call waits until the captured work is done. The host does
  // not block. `stream` may belong to any device.
  void make_stream_wait(cudaStream_t stream) const;
  // True when the captured work is done (or nothing was recorded).
  bool query() const;
  // Blocks the host until the captured work is done.
  void synchronize() const;
  // Milliseconds between this event and `end`, both recorded, completed and created with timing.
  float elapsed_ms(const Event& end) const;

 private:
  void destroy() noexcept;

  cudaEvent_t event_ = nullptr;
  Device device_ = Device::cuda(0);
  bool timing_ = false;
};

}  // namespace pb::device
