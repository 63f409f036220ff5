// A persistent std::thread pool with a static split, and thread-local scratch buffers; see
// parallel.h for why not OpenMP.
#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pb::kernels::cpu {
namespace {

class Pool {
 public:
  explicit Pool(int threads) { resize(threads); }
  ~Pool() { stop(); }

  int threads() const { return threads_; }

  void resize(int threads) {
    stop();
    threads_ = std::max(1, threads);
    quit_ = false;
    // A new worker has seen every earlier call: it must not take the last finished call (whose
    // fn_ is gone) for a new one.
    const uint64_t seen = generation_;
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i, seen] { work(i, seen); });
  }

  void run(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    const int parts = static_cast<int>(std::min<int64_t>(threads_, n));
    if (parts <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> one_at_a_time(run_mutex_);  // callers from several threads queue
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0, range_end(0, n, parts));
    spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_.load() == 0; });
    fn_ = nullptr;
  }

 private:
  static int64_t range_end(int part, int64_t n, int parts) { return n * (part + 1) / parts; }

  // Spins for up to kSpin before a thread blocks on a condition variable: a training step calls
  // parallel_for a few hundred times with tens of microseconds between calls, and waking a
  // sleeping thread (a futex round trip, slower still in a VM) left the other core idle at the
  // start and end of every call. Bounded, unlike OpenBLAS's spinning (kernels/cpu/gemm.cpp), so a
  // thread left without work sleeps after kSpin. ResNet-20 training on 2 cores, three alternating
  // 40-step runs each: no spin 287-295 examples/s, 100 us 298-352, 400 us 331-367 (libgomp's
  // default spin is of the same order).
  static constexpr std::chrono::microseconds kSpin{400};
  template <typename Ready>
  static void spin_until(Ready ready) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 1; !ready(); ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) return;
    }
  }

  void work(int index, uint64_t seen) {
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn = nullptr;
      int64_t n = 0;
      int parts = 0;
      spin_until([&] {
        return quit_.load(std::memory_order_acquire) ||
               generation_.load(std::memory_order_acquire) != seen;
      });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        fn = fn_;
        n = n_;
        parts = parts_;
      }
      if (index < parts) {
        (*fn)(n * index / parts, range_end(index, n, parts));
        std::lock_guard<std::mutex> lock(mutex_);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_.notify_one();
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
  // Written under mutex_; atomic so that a spinning thread may read them without it.
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
};

// OMP_NUM_THREADS, else OPENBLAS_NUM_THREADS, when set to a positive integer (the conventions a
// job scheduler or a study worker sets for its processes); else the cores available.
int default_threads() {
  for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

// Set while a pool range runs, so a nested parallel_for runs inline instead of deadlocking.
thread_local bool t_inside_pool = false;

}  // namespace

void set_cpu_kernel_threads(int threads) {
  if (threads < 1) {
    throw std::invalid_argument("set_cpu_kernel_threads: threads must be >= 1, got " +
                                std::to_string(threads));
  }
  if (threads != pool().threads()) pool().resize(threads);
}

int cpu_kernel_threads() {
  return pool().threads();
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (t_inside_pool || n < 2) {
    if (n > 0) fn(0, n);
    return;
  }
  pool().run(n, [&fn](int64_t begin, int64_t end) {
    const bool outer = t_inside_pool;
    t_inside_pool = true;
    fn(begin, end);
    t_inside_pool = outer;
  });
}

template <typename T>
T* workspace(int slot, int64_t count) {
  thread_local std::vector<std::unique_ptr<T[]>> buffers(4);
  thread_local std::vector<int64_t> sizes(4, 0);
  if (slot < 0 || slot >= 4) throw std::out_of_range("workspace: slot must be in [0, 4)");
  if (count > sizes[slot]) {
    const int64_t grown = std::max(count, sizes[slot] + sizes[slot] / 2);
    buffers[slot] = std::make_unique_for_overwrite<T[]>(static_cast<size_t>(grown));
    sizes[slot] = grown;
  }
  return buffers[slot].get();
}

template float* workspace<float>(int, int64_t);
template double* workspace<double>(int, int64_t);

}  // namespace pb::kernels::cpu
