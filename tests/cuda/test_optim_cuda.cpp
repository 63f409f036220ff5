// CUDA optimizer updates, clipping and EMA against the CPU (float32), through the runtime and
// directly on the kernels (unaligned pointers, long tensor lists). Skips without a device.
//
// Tolerances: the CUDA kernels run the same per-element code (kernels/optim.h) but nvcc contracts
// a * b + c into fma where the CPU rounds twice, and lars/lamb sum their norms in a different
// order (both in double). A step therefore differs by a few ulp of the step and may flip the
// rounding of theta - D by one ulp of theta; over five steps of lr <= 0.05 on parameters of
// order 1 that stays far below 2e-6 + 2e-5 |theta|, the bound used here. Swap, the EMA update and
// clipping of exactly representable cases are checked bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/optim.h"
#include "runtime/core/device.h"
#include "runtime/core/tensor.h"
#include "runtime/optim/clip.h"
#include "runtime/optim/ema.h"
#include "runtime/optim/optimizer.h"

namespace pb::optim {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

// Sizes around the 4096-element chunk and the float4 tail, and one of several chunks.
const std::vector<int64_t> kSizes = {1, 3, 7, 64, 4095, 4096, 4097, 10003, 100000};

std::vector<float> random_floats(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

// The same parameters on the CPU and on the GPU.
struct Twin {
  std::vector<NamedTensor> cpu, gpu;
};

Twin make_params(const std::vector<int64_t>& sizes, uint32_t seed) {
  Twin t;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::string name = "p";  // (one += at a time: GCC 12's -Wrestrict misfires on a + chain)
    name += std::to_string(i);
    name += i % 3 == 0 ? ".bias" : ".weight";
    Tensor c = from_vector<float>(random_floats(sizes[i], seed + static_cast<uint32_t>(i)),
                                  Shape{sizes[i]});
    t.cpu.emplace_back(name, c);
    t.gpu.emplace_back(name, c.to(Device::cuda(0)));
  }
  return t;
}

void set_grads(const Twin& t, int step) {
  for (std::size_t i = 0; i < t.cpu.size(); ++i) {
    const Tensor& c = t.cpu[i].second;
    Tensor g = from_vector<float>(random_floats(c.numel(), 7919u * static_cast<uint32_t>(step + 1) +
                                                               static_cast<uint32_t>(i)),
                                  c.shape());
    c.set_grad(g);
    t.gpu[i].second.set_grad(g.to(Device::cuda(0)));
  }
}

void expect_close(const Tensor& gpu, const Tensor& cpu, const std::string& what, double atol = 2e-6,
                  double rtol = 2e-5) {
  const std::vector<float> a = gpu.to_vector<float>(), b = cpu.to_vector<float>();
  ASSERT_EQ(a.size(), b.size());
  int bad = 0;
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    worst = std::max(worst, d);
    if (!(d <= atol + rtol * std::abs(b[i])) && ++bad <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << a[i] << " vs cpu " << b[i];
    }
  }
  if (bad > 0) ADD_FAILURE() << what << ": " << bad << " mismatches, worst " << worst;
}

void expect_bitwise(const Tensor& a, const Tensor& b, const std::string& what) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  ASSERT_EQ(x.size(), y.size());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << what;
}

OptimizerConfig config_for(const std::string& name) {
  OptimizerConfig c{name, {{"learning_rate", 0.01}, {"weight_decay", 0.01}}, {"*.bias"}};
  if (name == "lars") c.hyperparameters["learning_rate"] = 0.5;
  if (name == "rmsprop") c.hyperparameters["momentum"] = 0.5;
  return c;
}

class OptimCuda : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string name = GetParam();
  Twin t = make_params(kSizes, 11);
  auto cpu = make_optimizer(config_for(name), t.cpu);
  auto gpu = make_optimizer(config_for(name), t.gpu);
  for (int step = 0; step < 5; ++step) {
    set_grads(t, step);
    cpu->step(cpu->hyperparameter("learning_rate"));
    gpu->step(gpu->hyperparameter("learning_rate"));
  }
  for (std::size_t i = 0; i < t.cpu.size(); ++i) {
    expect_close(t.gpu[i].second, t.cpu[i].second, name + " " + t.cpu[i].first);
  }
  const auto sc = cpu->state_dict(), sg = gpu->state_dict();
  for (std::size_t i = 1; i < sc.size(); ++i) {
    expect_close(sg[i].second, sc[i].second, name + " " + sc[i].first, 1e-6, 2e-5);
  }
}

// More tensors than one launch holds (512): several launches, chunk offsets carried across them.
TEST_P(OptimCuda, LongTensorList) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string name = GetParam();
  std::vector<int64_t> sizes;
  for (int i = 0; i < 1100; ++i) sizes.push_back(1 + (i * 37) % 300);
  sizes[700] = 50000;
  Twin t = make_params(sizes, 3);
  auto cpu = make_optimizer(config_for(name), t.cpu);
  auto gpu = make_optimizer(config_for(name), t.gpu);
  for (int step = 0; step < 3; ++step) {
    set_grads(t, step);
    cpu->step(cpu->hyperparameter("learning_rate"));
    gpu->step(gpu->hyperparameter("learning_rate"));
  }
  for (std::size_t i = 0; i < t.cpu.size(); ++i) {
    expect_close(t.gpu[i].second, t.cpu[i].second, name + " " + t.cpu[i].first);
  }
}

INSTANTIATE_TEST_SUITE_P(AllOptimizers, OptimCuda, ::testing::ValuesIn(optimizer_names()),
                         [](const auto& param_info) { return param_info.param; });

// LARS/LAMB when later steps update fewer tensors than the first one (parameters without a
// gradient are left out of the list), then more again. The optimizer keeps the workspace sized
// for the longest list; the kernel carves it per call (partials, norms, counters), so a shorter
// list puts its counters where an earlier step left partial sums. Before the fix (the counters
// were zeroed only by the workspace allocation and by the last block of each tensor) those
// counters started at stale values, no block was the "last" one, the norms were never written
// and the update read stale partial sums as norms. With these sizes (chunks 2, 1, 3, 1, 5, 1 of
// 4096 elements; 13 chunks and 6 tensors at step 1, counters at byte 16 * 19 = 304):
//   step 2, list {1, 4}: counters at byte 16 * (6 + 2) = 128, on step 1's partial of tensor 4's
//     second chunk; the norms of tensors 1 and 4 are read from bytes 96..128: step 1's sums of
//     squares of tensor 3 and of tensor 4's first chunk;
//   step 3, list {2, 5}: counters at byte 16 * (4 + 2) = 96, where step 2 never wrote its norms
//     (step 1's partials again); the norms of tensors 2 and 5 are step 2's sums of squares of
//     tensor 4's last two chunks.
// Tensors have different parameter and gradient scales, so a trust ratio from the wrong norms is
// off by orders of magnitude, far outside the bounds of expect_close. The same scenario in double
// against a hand-written reference: tests/optim/test_lars_lamb_shrink.cpp.
class OptimCudaShrinkingList : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimCudaShrinkingList, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string name = GetParam();
  const std::vector<int64_t> sizes = {5000, 300, 9000, 64, 20000, 7};
  const std::vector<float> theta_scale = {1.0f, 0.1f, 0.5f, 3.0f, 2.0f, 0.05f};
  const std::vector<float> grad_scale = {0.01f, 1.0f, 0.2f, 0.05f, 0.002f, 3.0f};
  const std::vector<std::vector<int>> has_grad = {
      {0, 1, 2, 3, 4, 5}, {1, 4}, {2, 5}, {0, 1, 2, 3, 4, 5}, {0, 2, 3, 5}, {4}, {1, 2, 3}};
  Twin t;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::string pname = "p";
    pname += std::to_string(i);
    pname += i == 3 ? ".bias" : ".weight";  // one tensor without trust ratio and decay
    Tensor c = from_vector<float>(
        random_floats(sizes[i], 40 + static_cast<uint32_t>(i), theta_scale[i]), Shape{sizes[i]});
    t.cpu.emplace_back(pname, c);
    t.gpu.emplace_back(pname, c.to(Device::cuda(0)));
  }
  auto cpu = make_optimizer(config_for(name), t.cpu);
  auto gpu = make_optimizer(config_for(name), t.gpu);
  for (std::size_t step = 0; step < has_grad.size(); ++step) {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      t.cpu[i].second.set_grad(Tensor{});
      t.gpu[i].second.set_grad(Tensor{});
    }
    for (const int i : has_grad[step]) {
      Tensor g = from_vector<float>(
          random_floats(sizes[i],
                        1000u * static_cast<uint32_t>(step + 1) + static_cast<uint32_t>(i),
                        grad_scale[i]),
          Shape{sizes[i]});
      t.cpu[i].second.set_grad(g);
      t.gpu[i].second.set_grad(g.to(Device::cuda(0)));
    }
    cpu->step(cpu->hyperparameter("learning_rate"));
    gpu->step(gpu->hyperparameter("learning_rate"));
    const std::string when = name + " step " + std::to_string(step + 1) + " ";
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      expect_close(t.gpu[i].second, t.cpu[i].second, when + t.cpu[i].first);
    }
    const auto sc = cpu->state_dict(), sg = gpu->state_dict();
    ASSERT_EQ(sc.size(), sg.size());
    for (std::size_t i = 1; i < sc.size(); ++i) {
      ASSERT_EQ(sg[i].first, sc[i].first);
      expect_close(sg[i].second, sc[i].second, when + sc[i].first, 1e-6, 2e-5);
    }
    if (::testing::Test::HasFailure()) return;  // one step's report is enough
  }
}

INSTANTIATE_TEST_SUITE_P(Layerwise, OptimCudaShrinkingList, ::testing::Values("lars", "lamb"),
                         [](const auto& param_info) { return param_info.param; });

// Same inputs, same bits: the lars/lamb norms use a fixed partition and fixed-order sums.
TEST(OptimCudaDeterminism, LayerwiseRulesAreBitwiseReproducible) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const char* rule_name : {"lars", "lamb", "adam"}) {
    const std::string name = rule_name;
    Twin a = make_params(kSizes, 5), b = make_params(kSizes, 5);
    auto oa = make_optimizer(config_for(name), a.gpu);
    auto ob = make_optimizer(config_for(name), b.gpu);
    for (int step = 0; step < 4; ++step) {
      set_grads(a, step);
      set_grads(b, step);
      oa->step(oa->hyperparameter("learning_rate"));
      ob->step(ob->hyperparameter("learning_rate"));
    }
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      expect_bitwise(a.gpu[i].second, b.gpu[i].second, name + " " + a.gpu[i].first);
    }
  }
}

TEST(ClipCuda, NormAndClippingMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const ClipTarget target : {ClipTarget::kGradient, ClipTarget::kUpdate}) {
    Twin t = make_params(kSizes, 21);
    auto cpu = make_optimizer(config_for("momentum"), t.cpu);
    auto gpu = make_optimizer(config_for("momentum"), t.gpu);
    GradientClipper cc(ClipConfig{50.0, target}), cg(ClipConfig{50.0, target});
    for (int step = 0; step < 4; ++step) {
      set_grads(t, step);
      cc.step(*cpu, cpu->hyperparameter("learning_rate"));
      cg.step(*gpu, gpu->hyperparameter("learning_rate"));
      // Both norms are sums of squares in double, rounded once to float.
      EXPECT_NEAR(cg.read_grad_norm(), cc.read_grad_norm(), 1e-6 * cc.read_grad_norm());
    }
    EXPECT_GT(cc.read_stats().clipped_steps, 0);  // norms of ~sqrt(130000) = 360 > 50
    EXPECT_EQ(cg.read_stats().clipped_steps, cc.read_stats().clipped_steps);
    EXPECT_EQ(cg.read_stats().steps, 4);
    for (std::size_t i = 0; i < t.cpu.size(); ++i) {
      expect_close(t.gpu[i].second, t.cpu[i].second, "clipped momentum " + t.cpu[i].first);
    }
  }
}

// 3-4-12 gradients: norm 13, lambda 6.5 halves them exactly; below the threshold nothing moves.
TEST(ClipCuda, ExactRescaling) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const Device dev = Device::cuda(0);
  Tensor a = from_vector<float>(std::vector<float>{3.0f, 4.0f}, Shape{2}).to(dev);
  Tensor b = from_vector<float>(std::vector<float>{12.0f}, Shape{1}).to(dev);
  GradientClipper clipper(ClipConfig{6.5, ClipTarget::kGradient});
  clipper.clip_gradients({a, b});
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1.5f, 2.0f}));
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{6.0f}));
  EXPECT_EQ(clipper.read_grad_norm(), 13.0);
  GradientClipper loose(ClipConfig{100.0, ClipTarget::kGradient});
  loose.clip_gradients({a, b});
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1.5f, 2.0f}));
  EXPECT_EQ(loose.read_grad_norm(), 6.5);
  EXPECT_EQ(loose.read_stats().clipped_steps, 0);
}

TEST(EmaCuda, UpdateAndSwapMatchCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  Twin t = make_params(kSizes, 31);
  ExponentialMovingAverage ec(t.cpu, {0.9, true}), eg(t.gpu, {0.9, true});
  for (int step = 0; step < 3; ++step) {
    for (std::size_t i = 0; i < t.cpu.size(); ++i) {
      Tensor v = from_vector<float>(random_floats(t.cpu[i].second.numel(), 100u + step),
                                    t.cpu[i].second.shape());
      t.cpu[i].second.copy_(v);
      t.gpu[i].second.copy_(v);
    }
    ec.update();
    eg.update();
  }
  for (std::size_t i = 0; i < t.cpu.size(); ++i) {
    // y = d y + (1 - d) x with the same two constants: at most an fma apart.
    expect_close(eg.averages()[i].second, ec.averages()[i].second, "ema", 1e-6, 1e-6);
  }
  const Tensor live = t.gpu[8].second.clone();
  const Tensor avg = eg.averages()[8].second.clone();
  {
    EmaSwap swapped(eg);
    expect_bitwise(t.gpu[8].second, avg, "swapped in");
  }
  expect_bitwise(t.gpu[8].second, live, "swapped back");
}

// ---- kernel level: pointers that are not 16-byte aligned take the scalar path -------------------

class DeviceFloats {
 public:
  explicit DeviceFloats(std::size_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, (n + 8) * 4)); }
  ~DeviceFloats() { cudaFree(ptr_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* at(std::size_t offset) { return ptr_ + offset; }
  void upload(std::size_t offset, const std::vector<float>& v) {
    PB_CUDA_CHECK(cudaMemcpy(ptr_ + offset, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  }
  std::vector<float> download(std::size_t offset, std::size_t n) {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> v(n);
    PB_CUDA_CHECK(cudaMemcpy(v.data(), ptr_ + offset, n * 4, cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  std::size_t n_;
  float* ptr_ = nullptr;
};

TEST(OptimCudaKernels, UnalignedPointersAndUpdateBuffer) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  for (const kernels::OptimRule rule :
       {kernels::OptimRule::kAdam, kernels::OptimRule::kLamb, kernels::OptimRule::kNesterov}) {
    const std::size_t n = 10001, off = 1;  // 4-byte offset: not 16-byte aligned
    std::vector<float> p = random_floats(n, 1), g = random_floats(n, 2);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    DeviceFloats dp(n), dg(n), dm(n), dv(n), du(n);
    dp.upload(off, p);
    dg.upload(off, g);
    dm.upload(off, m);
    dv.upload(off, v);
    kernels::OptimTensor<float> cpu_t{
        p.data(), g.data(), m.data(), v.data(), nullptr, static_cast<int64_t>(n), 0.01f, true};
    std::vector<float> cpu_update(n);
    cpu_t.update = cpu_update.data();  // write D, leave theta alone
    kernels::OptimTensor<float> gpu_t{dp.at(off), dg.at(off), dm.at(off),
                                      dv.at(off), du.at(off), static_cast<int64_t>(n),
                                      0.01f,      true};
    kernels::OptimStep s;
    s.rule = rule;
    s.t = 1;
    s.lr = 0.01;
    s.momentum = 0.9;
    s.eps = 1e-8;
    void* workspace = nullptr;
    const int64_t ws = kernels::optim_cuda_workspace_bytes(rule, 1, &gpu_t);
    if (ws > 0) {
      PB_CUDA_CHECK(cudaMalloc(&workspace, static_cast<std::size_t>(ws)));
      PB_CUDA_CHECK(cudaMemset(workspace, 0, static_cast<std::size_t>(ws)));
    }
    kernels::optim_update_cpu<float>(s, 1, &cpu_t, nullptr);
    kernels::optim_update_cuda(nullptr, s, 1, &gpu_t, nullptr, workspace);
    const std::vector<float> gu = du.download(off, n), gp = dp.download(off, n);
    if (workspace) PB_CUDA_CHECK(cudaFree(workspace));
    EXPECT_EQ(std::memcmp(gp.data(), p.data(), n * 4), 0) << "theta must not move";
    int bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double d = std::abs(static_cast<double>(gu[i]) - cpu_update[i]);
      if (!(d <= 1e-9 + 1e-5 * std::abs(cpu_update[i])) && ++bad <= 5) {
        ADD_FAILURE() << "rule " << static_cast<int>(rule) << " i=" << i << ": cuda " << gu[i]
                      << " vs cpu " << cpu_update[i];
      }
    }
  }
}

// The kernel alone, without the optimizer: one workspace kept across calls of different list
// lengths, filled with garbage before the first call (it needs no initialisation).
TEST(OptimCudaKernels, WorkspaceNeedsNoInitialisationAndShrinks) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<int64_t> sizes = {9000, 300, 20000};
  std::vector<std::vector<float>> p, g;
  std::vector<DeviceFloats*> dp, dg, dm;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    p.push_back(
        random_floats(sizes[i], 70 + static_cast<uint32_t>(i), 0.5f + static_cast<float>(i)));
    g.push_back(
        random_floats(sizes[i], 80 + static_cast<uint32_t>(i), 0.01f * static_cast<float>(i + 1)));
  }
  std::vector<std::unique_ptr<DeviceFloats>> owned;
  auto device_copy = [&](const std::vector<float>& v) {
    owned.push_back(std::make_unique<DeviceFloats>(v.size()));
    owned.back()->upload(0, v);
    return owned.back().get();
  };
  std::vector<std::vector<float>> m(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    m[i].assign(static_cast<std::size_t>(sizes[i]), 0.0f);
    dp.push_back(device_copy(p[i]));
    dg.push_back(device_copy(g[i]));
    dm.push_back(device_copy(m[i]));
  }
  auto lists = [&](const std::vector<int>& which, std::vector<kernels::OptimTensor<float>>& cpu_l,
                   std::vector<kernels::OptimTensor<float>>& gpu_l) {
    cpu_l.clear();
    gpu_l.clear();
    for (const int i : which) {
      cpu_l.push_back(
          {p[i].data(), g[i].data(), m[i].data(), nullptr, nullptr, sizes[i], 0.01f, true});
      gpu_l.push_back(
          {dp[i]->at(0), dg[i]->at(0), dm[i]->at(0), nullptr, nullptr, sizes[i], 0.01f, true});
    }
  };
  kernels::OptimStep s;
  s.rule = kernels::OptimRule::kLars;
  s.lr = 0.5;
  s.momentum = 0.9;
  s.trust_coefficient = 0.02;
  std::vector<kernels::OptimTensor<float>> cpu_l, gpu_l;
  lists({0, 1, 2}, cpu_l, gpu_l);
  const int64_t ws = kernels::optim_cuda_workspace_bytes(s.rule, 3, gpu_l.data());
  void* workspace = nullptr;
  PB_CUDA_CHECK(cudaMalloc(&workspace, static_cast<std::size_t>(ws)));
  PB_CUDA_CHECK(cudaMemset(workspace, 0x5A, static_cast<std::size_t>(ws)));  // garbage
  const std::vector<std::vector<int>> calls = {{0, 1, 2}, {1, 2}, {2}, {0, 2}, {0, 1, 2}};
  for (std::size_t k = 0; k < calls.size(); ++k) {
    s.t = static_cast<int64_t>(k) + 1;
    lists(calls[k], cpu_l, gpu_l);
    kernels::optim_update_cpu<float>(s, static_cast<int64_t>(cpu_l.size()), cpu_l.data(), nullptr);
    kernels::optim_update_cuda(nullptr, s, static_cast<int64_t>(gpu_l.size()), gpu_l.data(),
                               nullptr, workspace);
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<float> got = dp[i]->download(0, p[i].size());
    int bad = 0;
    for (std::size_t j = 0; j < got.size(); ++j) {
      const double d = std::abs(static_cast<double>(got[j]) - p[i][j]);
      if (!(d <= 2e-6 + 2e-5 * std::abs(p[i][j])) && ++bad <= 5) {
        ADD_FAILURE() << "tensor " << i << " element " << j << ": cuda " << got[j] << " vs cpu "
                      << p[i][j];
      }
    }
  }
  PB_CUDA_CHECK(cudaFree(workspace));
}

}  // namespace
}  // namespace pb::optim
