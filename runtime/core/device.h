#pragma once
// Where a tensor lives: the host ("cpu") or CUDA device N ("cuda:N").
#include <compare>
#include <string>
#include <string_view>

namespace pb {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  // Parses "cpu", "cuda" (= cuda:0) or "cuda:N"; throws ValueError naming the text otherwise.
  static Device parse(std::string_view text);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  auto operator<=>(const Device&) const = default;
};

// True when this build has the CUDA backend and at least one device is visible.
bool cuda_available();
// Number of visible CUDA devices (0 in a CPU-only build).
int cuda_device_count();

}  // namespace pb
