#include "bench/cuda_bench.h"

#include <algorithm>
#include <random>

namespace pb::bench {

void fill_uniform(DeviceBuffer& buffer, uint64_t seed, float lo, float hi) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> host(buffer.count());
  for (float& v : host) v = dist(gen);
  PB_CUDA_CHECK(cudaMemcpy(buffer.get(), host.data(), buffer.bytes(), cudaMemcpyHostToDevice));
}

double copy_bandwidth_gbs() {
  static const double gbs = [] {
    constexpr std::size_t kCount = std::size_t{1} << 28;  // 1 GiB of floats
    DeviceBuffer src(kCount), dst(kCount);
    fill_uniform(src, 1);
    const double ms = median_ms(nullptr, [&] {
      PB_CUDA_CHECK(
          cudaMemcpyAsync(dst.get(), src.get(), src.bytes(), cudaMemcpyDeviceToDevice, nullptr));
    });
    return 2.0 * static_cast<double>(src.bytes()) / (ms * 1e-3) / 1e9;
  }();
  return gbs;
}

}  // namespace pb::bench
