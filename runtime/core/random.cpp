#include "runtime/core/random.h"

#include <cmath>
#include <numbers>

#include "kernels/philox.h"

namespace pb {

uint64_t Generator::next_u64() {
  const uint64_t counter = reserve(1);
  const kernels::Philox4x32 r = kernels::philox4x32_10(
      static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0x5eedu, 0,
      static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32));
  return (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
}

float Generator::uniform() {
  return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f);
}

double Generator::normal() {
  // Box-Muller on two 53-bit uniforms; u1 in (0, 1] so the log is finite.
  const double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

uint64_t Generator::below(uint64_t n) {
  // Rejection sampling: draw until the value falls below the largest multiple of n.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do {
    v = next_u64();
  } while (v >= limit);
  return v % n;
}

}  // namespace pb
