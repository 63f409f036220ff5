// Run-time instruction-set choice of the CPU kernels; see isa.h.
#include "kernels/cpu/isa.h"

#include <atomic>

namespace pb::kernels::cpu {
namespace {

struct Features {
  bool avx2 = false, fma = false;
};

Features detect() {
  Features f;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

std::atomic<bool> g_enabled{true};

}  // namespace

bool avx2_kernels_enabled() {
  return g_enabled.load(std::memory_order_relaxed) && features().avx2;
}

bool avx2_fma_kernels_enabled() {
  return avx2_kernels_enabled() && features().fma;
}

void set_avx2_kernels_enabled(bool on) {
  g_enabled.store(on);
}

}  // namespace pb::kernels::cpu
