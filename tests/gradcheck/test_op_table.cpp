// The universal op test: one row per op of the op table (runtime/ops/op_table.h), each with
// gradient-check variants (double, central differences, every differentiable input) and a
// hand-computed known-value check. The static_assert below fails to compile when an op is added
// to the table without its row here.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/ops/op_table.h"
#include "runtime/ops/ops.h"
#include "tests/common/gradcheck.h"

namespace pb {
namespace {

using Inputs = std::vector<Tensor>;
using testing::gradcheck;

const TensorOptions kF64 = TensorOptions{}.with_dtype(DType::F64);
const TensorOptions kF64Grad = TensorOptions{}.with_dtype(DType::F64).with_requires_grad();

Tensor rand64(const Shape& s, Generator& g, bool grad = true) {
  return normal(s, 0.0, 1.0, g, grad ? kF64Grad : kF64);
}

// Values at least `gap` away from 0 (relu's kink), random sign.
Tensor away_from_zero(const Shape& s, Generator& g, double gap = 0.05) {
  std::vector<double> v(static_cast<std::size_t>(s.numel()));
  for (double& x : v) {
    const double u = gap + g.uniform();
    x = g.uniform() < 0.5 ? -u : u;
  }
  return from_vector<double>(v, s, kF64Grad);
}

// A random permutation of evenly spaced values: no ties, so max pooling is differentiable.
Tensor distinct(const Shape& s, Generator& g) {
  std::vector<double> v(static_cast<std::size_t>(s.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.1 * static_cast<double>(i);
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
  return from_vector<double>(v, s, kF64Grad);
}

Tensor labels(std::vector<int32_t> v) {
  const auto n = static_cast<int64_t>(v.size());
  return from_vector<int32_t>(v, Shape{n});
}

Tensor t64(std::vector<double> v, const Shape& s) {
  return from_vector<double>(v, s, kF64);
}

void expect_values(const Tensor& t, const std::vector<double>& expected, double tol,
                   const std::string& what) {
  const std::vector<double> got = t.to_vector<double>();
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], expected[i], tol) << what << " element " << i;
  }
}

struct Variant {
  std::string name;
  std::function<Inputs(Generator&)> make;
  std::function<Tensor(const Inputs&)> run;
  std::vector<int> check;  // indices of inputs whose gradients are checked
};

struct OpCase {
  OpKind op;
  std::vector<Variant> variants;  // empty for non-differentiable ops
  std::function<void()> known_value;
};

std::vector<OpCase> make_cases() {
  std::vector<OpCase> c;

  c.push_back({OpKind::Matmul,
               {{"3x4 * 4x5",
                 [](Generator& g) {
                   return Inputs{rand64({3, 4}, g), rand64({4, 5}, g)};
                 },
                 [](const Inputs& in) { return ops::matmul(in[0], in[1]); },
                 {0, 1}}},
               [] {
                 // [[1,2],[3,4]] * [[5,6],[7,8]] = [[19,22],[43,50]]
                 expect_values(ops::matmul(t64({1, 2, 3, 4}, {2, 2}), t64({5, 6, 7, 8}, {2, 2})),
                               {19, 22, 43, 50}, 1e-12, "matmul");
               }});

  c.push_back({OpKind::Linear,
               {{"bias",
                 [](Generator& g) {
                   return Inputs{rand64({3, 4}, g), rand64({5, 4}, g), rand64({5}, g)};
                 },
                 [](const Inputs& in) { return ops::linear(in[0], in[1], in[2]); },
                 {0, 1, 2}},
                {"no bias",
                 [](Generator& g) {
                   return Inputs{rand64({2, 3}, g), rand64({1, 3}, g)};
                 },
                 [](const Inputs& in) { return ops::linear(in[0], in[1], Tensor{}); },
                 {0, 1}}},
               [] {
                 // x=[1,2], W=[[1,0],[0,1],[1,1]], b=[0.5,-1,0] -> [1.5, 1, 3]
                 expect_values(ops::linear(t64({1, 2}, {1, 2}), t64({1, 0, 0, 1, 1, 1}, {3, 2}),
                                           t64({0.5, -1, 0}, {3})),
                               {1.5, 1, 3}, 1e-12, "linear");
               }});

  auto conv_variant = [](std::string name, Shape x, Shape w, bool bias, ops::Conv2dOptions o) {
    return Variant{
        name,
        [=](Generator& g) {
          Inputs in{rand64(x, g), rand64(w, g)};
          if (bias) in.push_back(rand64({w[0]}, g));
          return in;
        },
        [=](const Inputs& in) { return ops::conv2d(in[0], in[1], bias ? in[2] : Tensor{}, o); },
        bias ? std::vector<int>{0, 1, 2} : std::vector<int>{0, 1}};
  };
  c.push_back({OpKind::Conv2d,
               {conv_variant("3x3 s1 p1 bias", {2, 2, 5, 4}, {3, 2, 3, 3}, true, {1, 1, 1, 1}),
                conv_variant("3x2 s(2,1) p(1,0)", {1, 3, 6, 5}, {2, 3, 3, 2}, false, {2, 1, 1, 0}),
                conv_variant("1x1 s2", {2, 3, 5, 5}, {4, 3, 1, 1}, true, {2, 2, 0, 0})},
               [] {
                 // 3x3 input 1..9, 2x2 all-ones filter, bias 1: window sums + 1.
                 expect_values(ops::conv2d(t64({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}),
                                           t64({1, 1, 1, 1}, {1, 1, 2, 2}), t64({1}, {1}), {}),
                               {13, 17, 25, 29}, 1e-12, "conv2d");
               }});

  auto bn_variant = [](std::string name, Shape x, bool training, int64_t v, bool relu = false) {
    return Variant{name,
                   [=](Generator& g) {
                     Inputs in{rand64(x, g), rand64({x[1]}, g), rand64({x[1]}, g)};
                     // running statistics (not differentiated): mean ~0, var in [0.5, 1.5)
                     in.push_back(rand64({x[1]}, g, false));
                     in.push_back(uniform({x[1]}, 0.5, 1.5, g, kF64));
                     return in;
                   },
                   [=](const Inputs& in) {
                     ops::BatchNormOptions o;
                     o.training = training;
                     o.virtual_batch_size = v;
                     o.relu = relu;
                     return ops::batch_norm(in[0], in[1], in[2], in[3], in[4], o);
                   },
                   {0, 1, 2}};
  };
  c.push_back(
      {OpKind::BatchNorm,
       {bn_variant("train (N,C,H,W)", {4, 3, 2, 2}, true, 0),
        bn_variant("train (N,C)", {6, 4}, true, 0), bn_variant("ghost V=2", {6, 2, 2, 1}, true, 2),
        bn_variant("eval", {3, 2, 2, 2}, false, 0),
        bn_variant("train + relu", {4, 3, 2, 2}, true, 0, true),
        bn_variant("ghost V=2 + relu", {4, 2, 3, 1}, true, 2, true),
        bn_variant("eval + relu", {3, 2, 2, 2}, false, 0, true)},
       [] {
         // One channel, values [1, 3]: mean 2, biased var 1 -> [-1, 1] (eps 0+).
         ops::BatchNormOptions o;
         o.eps = 1e-12;
         Tensor rm = t64({0}, {1}), rv = t64({1}, {1});
         expect_values(ops::batch_norm(t64({1, 3}, {2, 1}), Tensor{}, Tensor{}, rm, rv, o), {-1, 1},
                       1e-9, "batch_norm y");
         // running: 0.9*0 + 0.1*2 = 0.2; 0.9*1 + 0.1*(1 * 2/1) = 1.1
         expect_values(rm, {0.2}, 1e-12, "running_mean");
         expect_values(rv, {1.1}, 1e-12, "running_var");
       }});

  c.push_back({OpKind::LayerNorm,
               {{"affine",
                 [](Generator& g) {
                   return Inputs{rand64({3, 5}, g), rand64({5}, g), rand64({5}, g)};
                 },
                 [](const Inputs& in) { return ops::layer_norm(in[0], in[1], in[2]); },
                 {0, 1, 2}},
                {"plain 3-d",
                 [](Generator& g) {
                   return Inputs{rand64({2, 2, 4}, g)};
                 },
                 [](const Inputs& in) { return ops::layer_norm(in[0], Tensor{}, Tensor{}); },
                 {0}}},
               [] {
                 // [1, 3]: mean 2, var 1 -> [-1, 1]; scale 2 shift 1 -> [-1, 3]
                 expect_values(ops::layer_norm(t64({1, 3}, {1, 2}), t64({2, 2}, {2}),
                                               t64({1, 1}, {2}), 1e-12),
                               {-1, 3}, 1e-9, "layer_norm");
               }});

  c.push_back({OpKind::Relu,
               {{"away from 0",
                 [](Generator& g) {
                   return Inputs{away_from_zero({3, 7}, g)};
                 },
                 [](const Inputs& in) { return ops::relu(in[0]); },
                 {0}}},
               [] {
                 expect_values(ops::relu(t64({-2, 0, 3}, {3})), {0, 0, 3}, 0, "relu");
               }});

  c.push_back({OpKind::Gelu,
               {{"normal",
                 [](Generator& g) {
                   return Inputs{rand64({4, 5}, g)};
                 },
                 [](const Inputs& in) { return ops::gelu(in[0]); },
                 {0}}},
               [] {
                 // x * Phi(x): Phi(1) = 0.8413447460685429
                 expect_values(ops::gelu(t64({1, -1, 0}, {3})),
                               {0.8413447460685429, -0.15865525393145707, 0}, 1e-12, "gelu");
               }});

  c.push_back({OpKind::Add,
               {{"same shape",
                 [](Generator& g) {
                   return Inputs{rand64({2, 3, 2}, g), rand64({2, 3, 2}, g)};
                 },
                 [](const Inputs& in) { return ops::add(in[0], in[1]); },
                 {0, 1}},
                {"same tensor twice",
                 [](Generator& g) { return Inputs{rand64({5}, g)}; },
                 [](const Inputs& in) { return ops::add(in[0], in[0]); },
                 {0}}},
               [] {
                 expect_values(ops::add(t64({1, 2}, {2}), t64({10, 20}, {2})), {11, 22}, 0, "add");
               }});

  c.push_back({OpKind::AddRelu,
               {{"away from the kink",
                 [](Generator& g) {
                   return Inputs{away_from_zero({3, 5}, g), rand64({3, 5}, g)};
                 },
                 // b is scaled by 0.01 so that a + 0.01 b stays at least 0.02 away from 0
                 [](const Inputs& in) { return ops::add_relu(in[0], ops::scale(in[1], 0.01)); },
                 {0, 1}}},
               [] {
                 expect_values(ops::add_relu(t64({1, -2, 0.5}, {3}), t64({-3, 1, 0.5}, {3})),
                               {0, 0, 1}, 0, "add_relu");
               }});

  c.push_back({OpKind::Scale,
               {{"alpha -1.5",
                 [](Generator& g) {
                   return Inputs{rand64({3, 3}, g)};
                 },
                 [](const Inputs& in) { return ops::scale(in[0], -1.5); },
                 {0}}},
               [] {
                 expect_values(ops::scale(t64({1, -2}, {2}), 3), {3, -6}, 0, "scale");
               }});

  auto pool_variant = [](std::string name, bool max, Shape x, ops::Pool2dOptions o) {
    return Variant{name,
                   [=](Generator& g) { return Inputs{distinct(x, g)}; },
                   [=](const Inputs& in) {
                     return max ? ops::max_pool2d(in[0], o) : ops::avg_pool2d(in[0], o);
                   },
                   {0}};
  };
  c.push_back({OpKind::MaxPool2d,
               {pool_variant("2x2 s2", true, {2, 2, 4, 4}, {2, 2, 2, 2}),
                pool_variant("3x3 s2 p1 overlapping", true, {1, 2, 5, 5}, {3, 3, 2, 2, 1, 1})},
               [] {
                 expect_values(
                     ops::max_pool2d(t64({1, 5, 3, 2, 9, 4, 7, 8, 6}, {1, 1, 3, 3}), {2, 2, 1, 1}),
                     {9, 9, 9, 9}, 0, "max_pool2d");
               }});
  c.push_back({OpKind::AvgPool2d,
               {pool_variant("2x2 s2", false, {2, 2, 4, 4}, {2, 2, 2, 2}),
                pool_variant("3x3 s1 p1", false, {1, 2, 4, 3}, {3, 3, 1, 1, 1, 1})},
               [] {
                 expect_values(ops::avg_pool2d(t64({1, 2, 3, 4}, {1, 1, 2, 2}), {2, 2, 2, 2}),
                               {2.5}, 1e-12, "avg_pool2d");
               }});
  c.push_back({OpKind::GlobalAvgPool,
               {{"(2,3,3,2)",
                 [](Generator& g) {
                   return Inputs{rand64({2, 3, 3, 2}, g)};
                 },
                 [](const Inputs& in) { return ops::global_avg_pool(in[0]); },
                 {0}}},
               [] {
                 expect_values(
                     ops::global_avg_pool(t64({1, 2, 3, 4, 10, 20, 30, 40}, {1, 2, 2, 2})),
                     {2.5, 25}, 1e-12, "global_avg_pool");
               }});

  c.push_back({OpKind::Reshape,
               {{"(2,3,4)->(6,-1)",
                 [](Generator& g) {
                   return Inputs{rand64({2, 3, 4}, g)};
                 },
                 // scale after the view so the view's gradient path is exercised
                 [](const Inputs& in) {
                   return ops::scale(ops::reshape(in[0], {6, -1}), 2.0);
                 },
                 {0}}},
               [] {
                 const Tensor y = ops::reshape(t64({1, 2, 3, 4, 5, 6}, {2, 3}), {3, -1});
                 EXPECT_EQ(y.shape(), Shape({3, 2}));
                 expect_values(y, {1, 2, 3, 4, 5, 6}, 0, "reshape");
               }});

  c.push_back({OpKind::Dropout,
               {{"p=0.3",
                 [](Generator& g) {
                   return Inputs{rand64({4, 25}, g)};
                 },
                 [](const Inputs& in) {
                   Generator mask(42);  // the same mask on every call
                   return ops::dropout(in[0], 0.3, true, mask);
                 },
                 {0}}},
               [] {
                 // Every element is either dropped or scaled by 1/(1-p) = 2.
                 Generator g(7);
                 const std::vector<double> y =
                     ops::dropout(ones({1000}, kF64), 0.5, true, g).to_vector<double>();
                 int kept = 0;
                 for (double v : y) {
                   EXPECT_TRUE(v == 0.0 || v == 2.0) << v;
                   kept += v == 2.0;
                 }
                 EXPECT_GT(kept, 400);
                 EXPECT_LT(kept, 600);
                 EXPECT_EQ(g.offset(), 1000u);  // the generator advanced past the mask
               }});

  c.push_back({OpKind::SoftmaxCrossEntropy,
               {{"plain",
                 [](Generator& g) {
                   return Inputs{rand64({4, 5}, g)};
                 },
                 [](const Inputs& in) {
                   return ops::softmax_cross_entropy(in[0], labels({0, 4, 2, 2}), Tensor{});
                 },
                 {0}},
                {"smoothing 0.1 + weights with a 0",
                 [](Generator& g) {
                   return Inputs{rand64({3, 4}, g)};
                 },
                 [](const Inputs& in) {
                   return ops::softmax_cross_entropy(in[0], labels({1, 3, 0}),
                                                     t64({1.0, 0.0, 2.5}, {3}), 0.1);
                 },
                 {0}}},
               [] {
                 // logits [0, ln 3]: softmax [1/4, 3/4]; label 1 -> -ln(3/4) = ln(4/3)
                 expect_values(ops::softmax_cross_entropy(t64({0, std::log(3.0)}, {1, 2}),
                                                          labels({1}), Tensor{}),
                               {std::log(4.0 / 3.0)}, 1e-12, "softmax_cross_entropy");
               }});

  c.push_back(
      {OpKind::MseLoss,
       {{"both inputs",
         [](Generator& g) {
           return Inputs{rand64({3, 4}, g), rand64({3, 4}, g)};
         },
         [](const Inputs& in) { return ops::mse_loss(in[0], in[1]); },
         {0, 1}}},
       [] {
         // ((1-0)^2 + (2-4)^2) / 2 = 2.5
         expect_values(ops::mse_loss(t64({1, 2}, {2}), t64({0, 4}, {2})), {2.5}, 1e-12, "mse_loss");
       }});

  c.push_back(
      {OpKind::TopkErrors, {}, [] {
         // Example 0: label 2 is the max (top-1 hit). Example 1: label 0 is 3rd of 3
         // (top-1 and top-2 miss). Example 2 has weight 0.
         const Tensor logits = t64({0.1, 0.2, 0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.1}, {3, 3});
         const Tensor w = t64({1, 1, 0}, {3});
         expect_values(ops::topk_errors(logits, labels({2, 0, 1}), w, 1), {1, 2}, 0, "top-1");
         expect_values(ops::topk_errors(logits, labels({2, 0, 1}), w, 2), {1, 2}, 0, "top-2");
         expect_values(ops::topk_errors(logits, labels({2, 0, 1}), w, 3), {0, 2}, 0, "top-3");
         // Metrics are never recorded, even from inputs that require grad.
         Tensor l = logits.clone().set_requires_grad(true);
         EXPECT_FALSE(ops::topk_errors(l, labels({2, 0, 1}), w, 1).requires_grad());
       }});
  return c;
}

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> c = make_cases();
  return c;
}

// The table above must have exactly one row per op: make_cases() returns them in OpKind order.
static_assert(kOpCount == 18,
              "an op was added to or removed from runtime/ops/op_table.h: add or remove its row "
              "(gradcheck variants and known value) in tests/gradcheck/test_op_table.cpp, then "
              "update this count");

class OpTable : public ::testing::TestWithParam<std::size_t> {};

TEST_P(OpTable, RowMatchesSchema) {
  const std::size_t i = GetParam();
  ASSERT_EQ(cases().size(), kOpCount);
  const OpCase& row = cases()[i];
  EXPECT_EQ(row.op, kOpSchemas[i].kind) << "rows out of order at " << kOpSchemas[i].name;
  EXPECT_EQ(!row.variants.empty(), kOpSchemas[i].differentiable)
      << kOpSchemas[i].name << ": differentiable ops need gradcheck variants, others none";
}

TEST_P(OpTable, GradcheckDouble) {
  const OpCase& row = cases()[GetParam()];
  const std::string name(op_schema(row.op).name);
  if (row.variants.empty()) GTEST_SKIP() << name << " has no gradient";
  uint64_t seed = 1000 * GetParam();
  for (const Variant& v : row.variants) {
    Generator gen(++seed);
    const Inputs inputs = v.make(gen);
    const int64_t compared = gradcheck(v.run, inputs, v.check, seed, name + " [" + v.name + "]");
    int64_t expected = 0;
    for (int i : v.check) expected += inputs[static_cast<std::size_t>(i)].numel();
    EXPECT_EQ(compared, expected) << name << " [" << v.name << "]";
    EXPECT_EQ(autograd::tape_size(), 0u) << "backward must release the tape";
  }
}

TEST_P(OpTable, KnownValue) {
  const OpCase& row = cases()[GetParam()];
  autograd::NoGradGuard no_grad;
  row.known_value();
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpTable, ::testing::Range<std::size_t>(0, kOpCount),
                         [](const ::testing::TestParamInfo<std::size_t>& param) {
                           return std::string(kOpSchemas[param.param].name);
                         });

}  // namespace
}  // namespace pb
