#include "runtime/device/cuda_device.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <utility>

#include "runtime/core/error.h"
#include "runtime/device/errors.h"

#ifdef PB_WITH_CUDA
#include "kernels/cuda/check.h"
#endif

namespace pb {

// ---- discovery (declared in runtime/core/device.h) -------------------------------------------

#ifdef PB_WITH_CUDA
int cuda_device_count() {
  // The set of visible devices is fixed when the CUDA runtime initialises, so one query serves
  // the whole process (this sits on the allocation path).
  static const int count = [] {
    int n = 0;
    // No driver or no device: report zero devices instead of failing.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}
#else
int cuda_device_count() {
  return 0;
}
#endif

bool cuda_available() {
  return cuda_device_count() > 0;
}

namespace device {

void check_cuda_device(Device device) {
  if (!device.is_cuda()) fail("expected a CUDA device, got {}", device.str());
#ifdef PB_WITH_CUDA
  const int n = cuda_device_count();
  if (device.index < 0 || device.index >= n) {
    fail("device {} requested but {} CUDA device(s) are visible", device.str(), n);
  }
#else
  fail<NotImplementedError>("device {} requested but playbook was built without CUDA",
                            device.str());
#endif
}

void report_cuda_error(const char* what, int status) noexcept {
#ifdef PB_WITH_CUDA
  const auto code = static_cast<cudaError_t>(status);
  if (code == cudaSuccess || code == cudaErrorCudartUnloading) return;
  std::fprintf(stderr, "playbook: warning: %s failed: %s (%s)\n", what, cudaGetErrorName(code),
               cudaGetErrorString(code));
#else
  if (status != 0) std::fprintf(stderr, "playbook: warning: %s failed (status %d)\n", what, status);
#endif
}

// ---- properties ---------------------------------------------------------------------------------

std::string DeviceProperties::compute_capability() const {
  return std::to_string(major) + "." + std::to_string(minor);
}

double DeviceProperties::peak_memory_bandwidth_gbps() const {
  return 2.0 * memory_clock_khz * 1e3 * (memory_bus_width_bits / 8.0) / 1e9;
}

std::string DeviceProperties::str() const {
  std::string s = fmt::format("{} {} (sm_{}{}, {} SMs, {}, L2 {}", device.str(), name, major, minor,
                              sm_count, format_bytes(total_memory), format_bytes(l2_cache_bytes));
  const double bandwidth = peak_memory_bandwidth_gbps();
  if (bandwidth > 0) s += fmt::format(", {:.0f} GB/s", bandwidth);
  return s + ")";
}

#ifdef PB_WITH_CUDA

namespace {

// Per-device state, created once per process and never destroyed: streams and events must outlive
// every tensor, including those in static storage that die after main returns.
struct DeviceState {
  std::mutex mutex;
  std::atomic<cudaStream_t> compute{nullptr};
  std::atomic<cudaStream_t> copy{nullptr};
  bool have_properties = false;
  DeviceProperties properties;
};

DeviceState& state_of(Device device) {
  check_cuda_device(device);
  static DeviceState* states = new DeviceState[static_cast<std::size_t>(cuda_device_count())];
  return states[device.index];
}

cudaStream_t lazy_stream(Device device, std::atomic<cudaStream_t> DeviceState::*slot) {
  DeviceState& state = state_of(device);
  cudaStream_t stream = (state.*slot).load(std::memory_order_acquire);
  if (stream) return stream;
  std::lock_guard<std::mutex> lock(state.mutex);
  stream = (state.*slot).load(std::memory_order_relaxed);
  if (!stream) {
    DeviceGuard guard(device);  // a stream belongs to the device current at its creation
    PB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    (state.*slot).store(stream, std::memory_order_release);
  }
  return stream;
}

}  // namespace

DeviceProperties properties(Device device) {
  DeviceState& state = state_of(device);
  DeviceProperties result;
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    if (!state.have_properties) {
      cudaDeviceProp prop{};
      PB_CUDA_CHECK(cudaGetDeviceProperties(&prop, device.index));
      DeviceProperties& p = state.properties;
      p.device = device;
      p.name = prop.name;
      p.major = prop.major;
      p.minor = prop.minor;
      p.sm_count = prop.multiProcessorCount;
      p.total_memory = prop.totalGlobalMem;
      p.l2_cache_bytes = static_cast<std::size_t>(prop.l2CacheSize);
      p.shared_memory_per_block = prop.sharedMemPerBlock;
      p.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
      p.shared_memory_per_sm = prop.sharedMemPerMultiprocessor;
      p.max_threads_per_block = prop.maxThreadsPerBlock;
      p.warp_size = prop.warpSize;
      p.memory_bus_width_bits = prop.memoryBusWidth;
      // CUDA 13 dropped the clock fields from cudaDeviceProp; the attributes remain. A device
      // that does not report them leaves 0.
      int value = 0;
      if (cudaDeviceGetAttribute(&value, cudaDevAttrClockRate, device.index) == cudaSuccess) {
        p.clock_khz = value;
      } else {
        (void)cudaGetLastError();
      }
      value = 0;
      if (cudaDeviceGetAttribute(&value, cudaDevAttrMemoryClockRate, device.index) == cudaSuccess) {
        p.memory_clock_khz = value;
      } else {
        (void)cudaGetLastError();
      }
      state.have_properties = true;
    }
    result = state.properties;
  }
  DeviceGuard guard(device);
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  PB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  result.free_memory = free_bytes;
  return result;
}

Device current_device() {
  int index = 0;
  PB_CUDA_CHECK(cudaGetDevice(&index));
  return Device::cuda(index);
}

void set_current_device(Device device) {
  check_cuda_device(device);
  int index = 0;
  PB_CUDA_CHECK(cudaGetDevice(&index));
  if (index != device.index) PB_CUDA_CHECK(cudaSetDevice(device.index));
}

DeviceGuard::DeviceGuard(Device device) {
  if (device.is_cpu()) return;
  check_cuda_device(device);
  int index = 0;
  PB_CUDA_CHECK(cudaGetDevice(&index));
  if (index != device.index) {
    PB_CUDA_CHECK(cudaSetDevice(device.index));
    previous_ = index;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) report_cuda_error("cudaSetDevice (restoring)", cudaSetDevice(previous_));
}

cudaStream_t compute_stream(Device device) {
  return lazy_stream(device, &DeviceState::compute);
}

cudaStream_t copy_stream(Device device) {
  return lazy_stream(device, &DeviceState::copy);
}

void synchronize_stream(cudaStream_t stream) {
  PB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// ---- Event --------------------------------------------------------------------------------------

Event::Event(Device device, bool enable_timing) : device_(device), timing_(enable_timing) {
  DeviceGuard guard(device);  // an event belongs to the device current at its creation
  PB_CUDA_CHECK(
      cudaEventCreateWithFlags(&event_, enable_timing ? cudaEventDefault : cudaEventDisableTiming));
}

void Event::destroy() noexcept {
  if (event_) report_cuda_error("cudaEventDestroy", cudaEventDestroy(event_));
  event_ = nullptr;
}

void Event::record(cudaStream_t stream) {
  if (!event_) fail("Event::record: the event is empty (construct it with a device)");
  DeviceGuard guard(device_);
  PB_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::make_stream_wait(cudaStream_t stream) const {
  if (!event_) return;
  PB_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}

bool Event::query() const {
  if (!event_) return true;
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaSuccess) return true;
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it so later checks do not see it
    return false;
  }
  PB_CUDA_CHECK(status);
  return false;
}

void Event::synchronize() const {
  if (event_) PB_CUDA_CHECK(cudaEventSynchronize(event_));
}

float Event::elapsed_ms(const Event& end) const {
  if (!event_ || !end.event_ || !timing_ || !end.timing_) {
    fail("Event::elapsed_ms needs two events created with enable_timing = true");
  }
  float ms = 0.0f;
  PB_CUDA_CHECK(cudaEventElapsedTime(&ms, event_, end.event_));
  return ms;
}

#else  // CPU-only build

DeviceProperties properties(Device device) {
  check_cuda_device(device);  // throws NotImplementedError
  return {};
}

Device current_device() {
  fail<NotImplementedError>("current_device: playbook was built without CUDA");
}

void set_current_device(Device device) {
  check_cuda_device(device);
}

DeviceGuard::DeviceGuard(Device device) {
  if (device.is_cuda()) check_cuda_device(device);
}

DeviceGuard::~DeviceGuard() = default;

cudaStream_t compute_stream(Device device) {
  check_cuda_device(device);
  return nullptr;
}

cudaStream_t copy_stream(Device device) {
  check_cuda_device(device);
  return nullptr;
}

void synchronize_stream(cudaStream_t /*stream*/) {
  fail<NotImplementedError>("synchronize_stream: playbook was built without CUDA");
}

Event::Event(Device device, bool enable_timing) : device_(device), timing_(enable_timing) {
  check_cuda_device(device);
}

void Event::destroy() noexcept {
  event_ = nullptr;
}

void Event::record(cudaStream_t /*stream*/) {
  fail<NotImplementedError>("Event::record: playbook was built without CUDA");
}

void Event::make_stream_wait(cudaStream_t /*stream*/) const {}

bool Event::query() const {
  return true;
}

void Event::synchronize() const {}

float Event::elapsed_ms(const Event& /*end*/) const {
  fail<NotImplementedError>("Event::elapsed_ms: playbook was built without CUDA");
}

#endif  // PB_WITH_CUDA

Event::~Event() {
  destroy();
}

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)),
      device_(other.device_),
      timing_(other.timing_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    destroy();
    event_ = std::exchange(other.event_, nullptr);
    device_ = other.device_;
    timing_ = other.timing_;
  }
  return *this;
}

cudaStream_t launch_stream(Device device) {
  set_current_device(device);
  return compute_stream(device);
}

}  // namespace device
}  // namespace pb
