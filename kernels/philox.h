#pragma once
// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11). A (key, counter) pair maps to four independent 32-bit words with no
// state, so the CPU and CUDA kernels draw the same number for the same element index, in any
// order, on any thread. Usable from host and device code.
#include <cstdint>

#include "kernels/common.h"

namespace pb::kernels {

struct Philox4x32 {
  uint32_t v[4];
};

PB_HOST_DEVICE inline uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// The ten-round Philox4x32 bijection of counter (c0..c3) under key (k0,k1).
PB_HOST_DEVICE inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                               uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = philox_mulhilo(kMul0, c0, &hi0);
    const uint32_t lo1 = philox_mulhilo(kMul1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {{c0, c1, c2, c3}};
}

// A uniform float in [0,1) for element `index` of the stream (seed, offset): one Philox call per
// element (counter = index, offset), key = seed, first word, top 24 bits.
PB_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  const Philox4x32 r =
      philox4x32_10(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                    static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace pb::kernels
