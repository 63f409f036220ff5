#pragma once
// The CPU kernels' own threads and scratch memory (kernels/cpu only; not part of the kernel API).
//
// parallel_for splits [0, n) into one contiguous range per thread of a small persistent pool and
// runs fn(begin, end) on each, the calling thread taking the first range; it returns when all are
// done. It is the one set of threads of the CPU kernels: OpenBLAS is called single-threaded and
// gemm_cpu splits a large GEMM into one block per pool thread (kernels/cpu/gemm.cpp says why).
// The pool is a std::thread pool rather than OpenMP, whose runtime would add spinning threads of
// its own; our workers sleep on a condition variable between calls. A parallel_for inside a
// parallel_for range runs inline, so a kernel may call gemm_cpu from its own ranges.
// The thread count is set with set_cpu_kernel_threads (kernels/gemm.h set_cpu_blas_threads calls
// it from the one `--threads` setting); until then it is OMP_NUM_THREADS, else
// OPENBLAS_NUM_THREADS, when set to a positive integer, else the cores available. Work is split
// statically, so a kernel whose ranges write disjoint outputs and reduce in a fixed order stays
// deterministic for any thread count.
//
// workspace<T>(slot, count) is a thread-local, grow-only scratch buffer: hot-path kernels reuse it
// instead of allocating per call. Distinct slots are distinct buffers, so one kernel can hold
// several at once; a pointer stays valid until the same thread asks for that slot again.
#include <cstdint>
#include <functional>

namespace pb::kernels::cpu {

void set_cpu_kernel_threads(int threads);  // >= 1
int cpu_kernel_threads();

// fn(begin, end) over a static split of [0, n); runs inline when n < 2 or one thread is set.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

// Thread-local scratch of at least `count` elements of T, uninitialised. slot < 4.
template <typename T>
T* workspace(int slot, int64_t count);

}  // namespace pb::kernels::cpu
