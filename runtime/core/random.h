#pragma once
// A seeded, counter-based generator (Philox4x32-10, kernels/philox.h). Its whole state is
// (seed, offset): every draw of n numbers uses counters [offset, offset + n) and then advances
// offset by n, so the state is two integers to checkpoint, and a CUDA kernel given the same
// (seed, offset) draws the same numbers as the CPU.
#include <cstdint>

namespace pb {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves n counters and returns the first; the caller draws philox_uniform(seed, base, i).
  uint64_t reserve(uint64_t n) {
    const uint64_t base = offset_;
    offset_ += n;
    return base;
  }

  // Host draws, for initialisers and data augmentation.
  float uniform();             // [0, 1)
  double normal();             // N(0, 1), Box-Muller over two uniforms
  uint64_t next_u64();         // full 64 random bits
  uint64_t below(uint64_t n);  // uniform integer in [0, n), n > 0, without modulo bias

 private:
  uint64_t seed_;
  uint64_t offset_;
};

}  // namespace pb
