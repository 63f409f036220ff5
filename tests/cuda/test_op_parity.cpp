// Every op of the op table with a CUDA kernel, run through the runtime on a CUDA device and on
// the CPU from the same fresh random float inputs: outputs and every input gradient must agree
// within the op's documented bound. Skipped when no CUDA device is visible.
//
// Bounds are on the relative error ||cuda - cpu|| / ||cpu||. fp32 elementwise ops agree to a few
// ulp (1e-6); reductions (norms, losses, pooling averages, GEMM-based ops) sum in a different
// order on the GPU than on the CPU, so their error grows like eps * sqrt(reduction length): 1e-5
// for the sizes used here (reductions of at most a few thousand terms).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "runtime/autograd/tape.h"
#include "runtime/device/memory.h"
#include "runtime/ops/op_table.h"
#include "runtime/ops/ops.h"

namespace pb {
namespace {

#define PB_SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

using Inputs = std::vector<Tensor>;

struct ParityCase {
  OpKind op;
  std::string name;
  double bound;
  std::function<Inputs(Generator&)> make;  // CPU float inputs
  std::function<Tensor(const Inputs&)> run;
};

Tensor randn(const Shape& s, Generator& g, bool grad = true) {
  return normal(s, 0.0, 1.0, g, TensorOptions{}.with_requires_grad(grad));
}

Tensor int_labels(int64_t n, int64_t k, Generator& g) {
  std::vector<int32_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(g.below(static_cast<uint64_t>(k)));
  return from_vector<int32_t>(v, {n});
}

double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = got.to_vector<float>(), b = want.to_vector<float>();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;  // unwritten (poisoned) or broken
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

std::vector<ParityCase> cases() {
  std::vector<ParityCase> c;
  c.push_back({OpKind::Matmul, "129x65 * 65x33", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({129, 65}, g), randn({65, 33}, g)};
               },
               [](const Inputs& in) { return ops::matmul(in[0], in[1]); }});
  c.push_back({OpKind::Linear, "(37,100)->50 with bias", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({37, 100}, g), randn({50, 100}, g), randn({50}, g)};
               },
               [](const Inputs& in) { return ops::linear(in[0], in[1], in[2]); }});
  auto conv = [&](std::string name, Shape x, Shape w, bool bias, ops::Conv2dOptions o) {
    c.push_back(
        {OpKind::Conv2d, name, 1e-5,
         [=](Generator& g) {
           Inputs in{randn(x, g), randn(w, g)};
           if (bias) in.push_back(randn({w[0]}, g));
           return in;
         },
         [=](const Inputs& in) { return ops::conv2d(in[0], in[1], bias ? in[2] : Tensor{}, o); }});
  };
  conv("3x3 s1 p1 (8,16,16,16)", {8, 16, 16, 16}, {32, 16, 3, 3}, true, {1, 1, 1, 1});
  conv("3x2 s(2,1) p(1,0) odd", {3, 5, 7, 9}, {6, 5, 3, 2}, false, {2, 1, 1, 0});
  conv("1x1 s2", {4, 16, 9, 9}, {8, 16, 1, 1}, false, {2, 2, 0, 0});
  conv("7x7 s2 p3 stem", {2, 3, 32, 32}, {16, 3, 7, 7}, false, {2, 2, 3, 3});
  auto bn = [&](std::string name, Shape x, bool training, int64_t v, bool relu) {
    c.push_back({OpKind::BatchNorm, name, 1e-5,
                 [=](Generator& g) {
                   return Inputs{randn(x, g), randn({x[1]}, g), randn({x[1]}, g),
                                 randn({x[1]}, g, false), uniform({x[1]}, 0.5, 1.5, g)};
                 },
                 [=](const Inputs& in) {
                   ops::BatchNormOptions o;
                   o.training = training;
                   o.virtual_batch_size = v;
                   o.relu = relu;
                   return ops::batch_norm(in[0], in[1], in[2], in[3], in[4], o);
                 }});
  };
  bn("train (32,7,11,13)", {32, 7, 11, 13}, true, 0, false);
  bn("ghost V=8 (32,5,6,6)", {32, 5, 6, 6}, true, 8, false);
  bn("train (64,33) 1d", {64, 33}, true, 0, false);
  bn("eval (16,4,5,5)", {16, 4, 5, 5}, false, 0, false);
  bn("train + relu (16,8,9,9)", {16, 8, 9, 9}, true, 0, true);
  bn("ghost V=4 + relu (16,3,7,7)", {16, 3, 7, 7}, true, 4, true);
  c.push_back({OpKind::LayerNorm, "(37,129)", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({37, 129}, g), randn({129}, g), randn({129}, g)};
               },
               [](const Inputs& in) { return ops::layer_norm(in[0], in[1], in[2]); }});
  c.push_back({OpKind::Relu, "1000003 elements", 1e-6,
               [](Generator& g) { return Inputs{randn({1000003}, g)}; },
               [](const Inputs& in) { return ops::relu(in[0]); }});
  c.push_back({OpKind::Gelu, "(33,65)", 1e-6,
               [](Generator& g) {
                 return Inputs{randn({33, 65}, g)};
               },
               [](const Inputs& in) { return ops::gelu(in[0]); }});
  c.push_back({OpKind::Add, "(7,11,13)", 1e-6,
               [](Generator& g) {
                 return Inputs{randn({7, 11, 13}, g), randn({7, 11, 13}, g)};
               },
               [](const Inputs& in) { return ops::add(in[0], in[1]); }});
  c.push_back({OpKind::AddRelu, "(7,11,13)", 1e-6,
               [](Generator& g) {
                 return Inputs{randn({7, 11, 13}, g), randn({7, 11, 13}, g)};
               },
               [](const Inputs& in) { return ops::add_relu(in[0], in[1]); }});
  c.push_back({OpKind::Scale, "(1001)", 1e-6, [](Generator& g) { return Inputs{randn({1001}, g)}; },
               [](const Inputs& in) { return ops::scale(in[0], -0.37); }});
  c.push_back({OpKind::MaxPool2d, "3x3 s2 p1 (4,6,17,15)", 1e-6,
               [](Generator& g) {
                 return Inputs{randn({4, 6, 17, 15}, g)};
               },
               [](const Inputs& in) {
                 return ops::max_pool2d(in[0], {3, 3, 2, 2, 1, 1});
               }});
  c.push_back({OpKind::AvgPool2d, "3x3 s1 p1 (4,6,17,15)", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({4, 6, 17, 15}, g)};
               },
               [](const Inputs& in) {
                 return ops::avg_pool2d(in[0], {3, 3, 1, 1, 1, 1});
               }});
  c.push_back({OpKind::GlobalAvgPool, "(8,64,7,7)", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({8, 64, 7, 7}, g)};
               },
               [](const Inputs& in) { return ops::global_avg_pool(in[0]); }});
  c.push_back({OpKind::Reshape, "(6,35)->(-1,7)", 1e-7,
               [](Generator& g) {
                 return Inputs{randn({6, 35}, g)};
               },
               [](const Inputs& in) {
                 return ops::scale(ops::reshape(in[0], {-1, 7}), 2.0);
               }});
  c.push_back({OpKind::Dropout, "p=0.25 (5,1001)", 1e-6,
               [](Generator& g) {
                 return Inputs{randn({5, 1001}, g)};
               },
               [](const Inputs& in) {
                 Generator mask(99);
                 return ops::dropout(in[0], 0.25, true, mask);
               }});
  c.push_back({OpKind::SoftmaxCrossEntropy, "(300,1000) smoothing 0.1 weights", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({300, 1000}, g)};
               },
               [](const Inputs& in) {
                 Generator lg(5);
                 const Tensor labels = int_labels(300, 1000, lg);
                 std::vector<float> w(300, 1.0f);
                 w[7] = 0.0f;
                 w[8] = 2.5f;
                 const Tensor weights = from_vector<float>(w, {300}).to(in[0].device());
                 return ops::softmax_cross_entropy(in[0], labels.to(in[0].device()), weights, 0.1);
               }});
  c.push_back({OpKind::MseLoss, "(129,17)", 1e-5,
               [](Generator& g) {
                 return Inputs{randn({129, 17}, g), randn({129, 17}, g)};
               },
               [](const Inputs& in) { return ops::mse_loss(in[0], in[1]); }});
  c.push_back({OpKind::TopkErrors, "top-5 of (1000,100)", 0.0,
               [](Generator& g) {
                 return Inputs{randn({1000, 100}, g, false)};
               },
               [](const Inputs& in) {
                 Generator lg(6);
                 return ops::topk_errors(in[0], int_labels(1000, 100, lg).to(in[0].device()),
                                         Tensor{}, 5);
               }});
  return c;
}

Inputs to_cuda(const Inputs& in) {
  Inputs out;
  for (const Tensor& t : in) {
    Tensor d = t.detach().to(Device::cuda(0));
    if (t.requires_grad()) d.set_requires_grad(true);
    out.push_back(d);
  }
  return out;
}

class OpParity : public ::testing::TestWithParam<std::size_t> {};

TEST_P(OpParity, CudaMatchesCpu) {
  PB_SKIP_WITHOUT_CUDA();
  static const std::vector<ParityCase> all = cases();
  const ParityCase& pc = all[GetParam()];
  const std::string label = std::string(op_schema(pc.op).name) + " [" + pc.name + "]";
  device::set_poison_allocations(true);  // every new buffer starts as NaN
  Generator gen(1000 + GetParam());
  const Inputs cpu = pc.make(gen);
  const Inputs gpu = to_cuda(cpu);
  const Tensor y_cpu = pc.run(cpu);
  const Tensor y_gpu = pc.run(gpu);
  ASSERT_EQ(y_gpu.device(), Device::cuda(0)) << label;
  EXPECT_LE(rel_error(y_gpu, y_cpu), pc.bound) << label << ": output";
  if (y_cpu.requires_grad()) {
    Generator rg(7);
    const Tensor seed = normal(y_cpu.shape(), 0, 1, rg);
    autograd::backward(y_cpu, seed);
    autograd::backward(y_gpu, seed.to(Device::cuda(0)));
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      if (!cpu[i].requires_grad()) continue;
      ASSERT_TRUE(gpu[i].grad().defined()) << label << ": input " << i << " got no gradient";
      EXPECT_LE(rel_error(gpu[i].grad(), cpu[i].grad()), pc.bound)
          << label << ": gradient of input " << i;
    }
  }
  device::set_poison_allocations(false);
}

INSTANTIATE_TEST_SUITE_P(AllCudaOps, OpParity, ::testing::Range<std::size_t>(0, cases().size()));

TEST(OpParityCoverage, EveryOpWithACudaKernelHasAParityCase) {
  std::vector<bool> covered(kOpCount, false);
  for (const ParityCase& pc : cases()) covered[static_cast<std::size_t>(pc.op)] = true;
  for (const OpSchema& s : kOpSchemas) {
    EXPECT_EQ(covered[static_cast<std::size_t>(s.kind)], s.cuda_kernel)
        << s.name << ": an op with a CUDA kernel needs a parity case here (and only those)";
  }
}

}  // namespace
}  // namespace pb
