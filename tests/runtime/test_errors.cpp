// Shape and argument errors: exceptions whose message names the op, the module (when the op
// runs inside one) and the shapes involved.
#include <gtest/gtest.h>

#include <string>

#include "runtime/nn/layers.h"
#include "runtime/ops/ops.h"

namespace pb {
namespace {

template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception of the expected type was thrown";
  return {};
}

TEST(OpErrors, Conv2dChannelMismatchInsideModuleNamesOpModuleAndShapes) {
  Generator gen(1);
  auto stem = std::make_shared<nn::Sequential>();
  stem->push_back(std::make_shared<nn::Conv2d>(1, 16, nn::Conv2dConfig{3, 1, 1, false}, gen));
  nn::Sequential root;
  root.push_back(stem);  // the conv's path is "0.0"
  const std::string msg = message_of<ShapeError>([&] { root(zeros({2, 3, 8, 8})); });
  EXPECT_EQ(msg, "conv2d (0.0): input (2, 3, 8, 8) has 3 channels, weight (16, 1, 3, 3) expects 1");
}

TEST(OpErrors, LinearFeatureMismatchNamesTheModulePath) {
  Generator gen(1);
  struct Net : nn::Module {
    explicit Net(Generator& g) {
      fc = register_module("fc", std::make_shared<nn::Linear>(4, 2, g));
    }
    Tensor forward(const Tensor& x) override { return (*fc)(x); }
    std::string describe() const override { return "Net()"; }
    std::shared_ptr<nn::Linear> fc;
  } net(gen);
  const std::string msg = message_of<ShapeError>([&] { net(zeros({3, 5})); });
  EXPECT_EQ(msg, "linear (fc): input (3, 5) has 5 features, weight (2, 4) expects 4");
}

TEST(OpErrors, OpOutsideAnyModuleNamesJustTheOp) {
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::matmul(zeros({2, 3}), zeros({4, 5}));
            }),
            "matmul: inner dimensions differ: a (2, 3) and b (4, 5)");
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::add(zeros({2, 3}), zeros({3, 2}));
            }),
            "add: shapes (2, 3) and (3, 2) differ (no broadcasting)");
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::conv2d(zeros({2, 3, 8}), zeros({4, 3, 3, 3}), {}, {});
            }),
            "conv2d: input must have 4 dimensions, got shape (2, 3, 8)");
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::max_pool2d(zeros({1, 1, 2, 2}), {3, 3, 1, 1});
            }),
            "max_pool2d: input (1, 1, 2, 2) with padding (0, 0) is smaller than the 3x3 window");
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::batch_norm(zeros({4, 3, 2, 2}), ones({5}), Tensor{}, Tensor{}, Tensor{}, {});
            }),
            "batch_norm: weight must have shape (3), got (5)");
  EXPECT_EQ(message_of<ShapeError>([] {
              ops::reshape(zeros({2, 3}), {4, 2});
            }),
            "reshape: cannot view (2, 3) (6 elements) as (4, 2) (8 elements)");
  EXPECT_EQ(message_of<ShapeError>([] { ops::mse_loss(zeros({2}), zeros({3})); }),
            "mse_loss: pred (2) and target (3) differ in shape");
}

TEST(OpErrors, DtypeAndLabelProblems) {
  const Tensor logits = zeros({2, 3});
  EXPECT_EQ(
      message_of<ShapeError>([&] { ops::softmax_cross_entropy(logits, zeros({2}), Tensor{}); }),
      "softmax_cross_entropy: labels must be int32, got float32");
  EXPECT_EQ(message_of<ValueError>([&] {
              ops::softmax_cross_entropy(logits, from_vector<int32_t>({0, 3}, {2}), Tensor{});
            }),
            "softmax_cross_entropy: label 3 of example 1 is outside [0, 3)");
  EXPECT_EQ(message_of<ShapeError>([&] {
              ops::add(logits, zeros({2, 3}, TensorOptions{}.with_dtype(DType::F64)));
            }),
            "add: b is float64 but a is float32");
  EXPECT_EQ(message_of<ValueError>([&] {
              ops::topk_errors(logits, from_vector<int32_t>({0, 1}, {2}), Tensor{}, 4);
            }),
            "topk_errors: k = 4 must be in [1, 3] for logits (2, 3)");
}

TEST(OpErrors, ArgumentRanges) {
  Generator g(0);
  EXPECT_EQ(message_of<ValueError>([&] { ops::dropout(zeros({4}), 1.0, true, g); }),
            "dropout: p must be in [0, 1), got 1");
  EXPECT_EQ(message_of<ValueError>([] {
              ops::conv2d(zeros({1, 1, 4, 4}), zeros({1, 1, 3, 3}), {}, {0, 1, 0, 0});
            }),
            "conv2d: stride (0, 1) must be >= 1 and padding (0, 0) >= 0");
  EXPECT_EQ(message_of<ValueError>([] { Device::parse("gpu0"); }),
            "invalid device 'gpu0': expected cpu, cuda or cuda:N");
}

TEST(OpErrors, BackwardFromANonScalarOrUntrackedTensor) {
  Tensor x = ones({3}).set_requires_grad(true);
  EXPECT_EQ(message_of<ValueError>([&] { ops::scale(x, 2).backward(); }),
            "backward: the root must be a scalar (one element), got shape (3)");
  EXPECT_NE(message_of<ValueError>([] { ones({}).backward(); }).find("does not require grad"),
            std::string::npos);
}

}  // namespace
}  // namespace pb
