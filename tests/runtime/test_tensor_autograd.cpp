// Tensor basics, the autograd tape and nn modules.
#include <gtest/gtest.h>

#include <sstream>

#include "runtime/autograd/tape.h"
#include "runtime/nn/init.h"
#include "runtime/nn/layers.h"
#include "runtime/ops/ops.h"

namespace pb {
namespace {

TEST(Tensor, FactoriesShapesAndValues) {
  const Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), Shape({2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::F32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(z.to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(full({2}, 2.5, TensorOptions{}.with_dtype(DType::F64)).to_vector<double>(),
            (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(ones({}).numel(), 1);  // a scalar
  EXPECT_THROW(from_vector<float>({1, 2, 3}, {2, 2}), ShapeError);
  EXPECT_THROW(Shape({1, 2, 3, 4, 5, 6}), ShapeError);  // more than 5 dims
  EXPECT_THROW(z.data<double>(), ShapeError);           // dtype mismatch
  EXPECT_THROW(empty({2}, TensorOptions{}.with_dtype(DType::BF16)), NotImplementedError);
}

TEST(Tensor, SeededRandomFactoriesAreReproducibleAndHaveTheRightMoments) {
  Generator a(5), b(5), c(6);
  const std::vector<float> va = normal({20000}, 1.0, 2.0, a).to_vector<float>();
  EXPECT_EQ(va, normal({20000}, 1.0, 2.0, b).to_vector<float>());
  EXPECT_NE(va, normal({20000}, 1.0, 2.0, c).to_vector<float>());
  double mean = 0, var = 0;
  for (float v : va) mean += v / 20000.0;
  for (float v : va) var += (v - mean) * (v - mean) / 20000.0;
  EXPECT_NEAR(mean, 1.0, 0.05);  // 5 standard errors: 2/sqrt(20000) = 0.014
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.05);
  Generator u(1);
  for (float v : uniform({1000}, -1, 3, u).to_vector<float>()) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 3.0f);
  }
}

TEST(Tensor, ReshapeAndFlattenAreViewsOfTheSameStorage) {
  const Tensor x = from_vector<float>({1, 2, 3, 4, 5, 6}, {1, 2, 3});
  const Tensor flat = x.flatten(1);
  EXPECT_EQ(flat.shape(), Shape({1, 6}));
  EXPECT_EQ(flat.raw_data(), x.raw_data());
  x.data<float>()[0] = 42;
  EXPECT_EQ(flat.to_vector<float>()[0], 42);
  const Tensor copy = x.clone();
  x.data<float>()[0] = 7;
  EXPECT_EQ(copy.to_vector<float>()[0], 42);
}

TEST(Tensor, PrintingIsReadable) {
  const std::string s = from_vector<float>({1, 2, 3, 4}, {2, 2}).str();
  EXPECT_EQ(s, "tensor(float32, cpu, shape (2, 2)) [[1, 2], [3, 4]]");
  std::ostringstream os;
  os << zeros({10}, TensorOptions{}.with_dtype(DType::I32));
  EXPECT_EQ(os.str(), "tensor(int32, cpu, shape (10)) [0, 0, 0, ..., 0, 0, 0]");
}

TEST(Autograd, GradientsAccumulateIntoLeavesAcrossBackwardCalls) {
  Tensor w = from_vector<double>({1, 2}, {1, 2}, TensorOptions{}.with_requires_grad());
  const Tensor x = from_vector<double>({3, 4}, {1, 2});
  for (int i = 0; i < 2; ++i) {
    ops::linear(x, w, Tensor{}).backward();  // d(x.w)/dw = x
  }
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{6, 8}));
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST(Autograd, SharedSubexpressionsSumTheirGradients) {
  // y = relu(x) + 3 * relu(x): dy/dx = 4 where x > 0
  Tensor x = from_vector<double>({-1, 2}, {2}, TensorOptions{}.with_requires_grad());
  const Tensor r = ops::relu(x);
  const Tensor y = ops::add(r, ops::scale(r, 3));
  autograd::backward(y, ones({2}, TensorOptions{}.with_dtype(DType::F64)));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 4}));
}

TEST(Autograd, NoGradAndDetachRecordNothing) {
  Tensor x = ones({3}).set_requires_grad(true);
  {
    autograd::NoGradGuard guard;
    EXPECT_FALSE(ops::relu(x).requires_grad());
    EXPECT_EQ(autograd::tape_size(), 0u);
  }
  EXPECT_FALSE(ops::relu(x.detach()).requires_grad());
  EXPECT_EQ(autograd::tape_size(), 0u);
  const Tensor y = ops::relu(x);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_EQ(autograd::tape_size(), 1u);
  EXPECT_THROW(Tensor(y).set_requires_grad(false), ValueError);
  autograd::clear_tape();
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST(Autograd, TapeIsReleasedEvenWhenBackwardFails) {
  Tensor x = ones({2}).set_requires_grad(true);
  const Tensor y = ops::relu(x);
  EXPECT_THROW(autograd::backward(y, ones({3})), ValueError);  // wrong seed shape: before walk
  const Tensor loss = ops::mse_loss(y, zeros({2}));
  loss.backward();
  EXPECT_EQ(autograd::tape_size(), 0u);
  EXPECT_TRUE(x.grad().defined());
}

struct Block : nn::Module {
  explicit Block(Generator& g) {
    conv1 = register_module(
        "conv1", std::make_shared<nn::Conv2d>(2, 2, nn::Conv2dConfig{3, 1, 1, false}, g));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm>(2));
    nn::BatchNormConfig last;
    last.last_in_residual_branch = true;
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm>(2, last));
  }
  Tensor forward(const Tensor& x) override {
    return ops::add(x, (*bn2)(ops::relu((*bn1)((*conv1)(x)))));
  }
  std::string describe() const override { return "Block()"; }
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm> bn1, bn2;
};

struct Net : nn::Module {
  explicit Net(Generator& g) {
    layer1 = register_module("layer1", std::make_shared<nn::Sequential>());
    layer1->push_back(std::make_shared<Block>(g));
    fc = register_module("fc", std::make_shared<nn::Linear>(2, 3, g));
  }
  Tensor forward(const Tensor& x) override { return (*fc)(ops::global_avg_pool((*layer1)(x))); }
  std::string describe() const override { return "Net()"; }
  std::shared_ptr<nn::Sequential> layer1;
  std::shared_ptr<nn::Linear> fc;
};

TEST(Modules, PyTorchStyleNamesForParametersAndBuffers) {
  Generator g(3);
  Net net(g);
  std::vector<std::string> names;
  for (const auto& [name, t] : net.state()) names.push_back(name + " " + t.shape().str());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "layer1.0.conv1.weight (2, 2, 3, 3)", "layer1.0.bn1.weight (2)",
                       "layer1.0.bn1.bias (2)", "layer1.0.bn2.weight (2)", "layer1.0.bn2.bias (2)",
                       "fc.weight (3, 2)", "fc.bias (3)", "layer1.0.bn1.running_mean (2)",
                       "layer1.0.bn1.running_var (2)", "layer1.0.bn2.running_mean (2)",
                       "layer1.0.bn2.running_var (2)"}));
  EXPECT_EQ(net.num_parameters(), 36 + 2 * 4 + 6 + 3);
  EXPECT_EQ(net.layer1->children()[0].second->path(), "layer1.0");
  for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Modules, TrainEvalAndZeroInitOfResidualBranches) {
  Generator g(3);
  Net net(g);
  EXPECT_EQ(nn::init::zero_init_residual_branches(net), 1);
  Block& block = static_cast<Block&>(*net.layer1->children()[0].second);
  EXPECT_EQ(block.bn2->weight().to_vector<float>(), (std::vector<float>{0, 0}));
  EXPECT_EQ(block.bn1->weight().to_vector<float>(), (std::vector<float>{1, 1}));
  // With the branch's last scale at zero the block is the identity.
  Generator gx(9);
  const Tensor x = normal({4, 2, 3, 3}, 0, 1, gx);
  EXPECT_EQ((*block.bn2).is_training(), true);
  EXPECT_EQ(block(x).to_vector<float>(), x.to_vector<float>());
  net.eval();
  EXPECT_FALSE(block.bn1->is_training());
  net.train();
  EXPECT_TRUE(block.bn1->is_training());
  // Training updates running statistics; eval leaves them alone.
  autograd::clear_tape();
  const std::vector<float> before = block.bn1->running_mean().to_vector<float>();
  {
    autograd::NoGradGuard ng;
    net(x);
    EXPECT_NE(block.bn1->running_mean().to_vector<float>(), before);
    net.eval();
    const std::vector<float> after = block.bn1->running_mean().to_vector<float>();
    net(x);
    EXPECT_EQ(block.bn1->running_mean().to_vector<float>(), after);
  }
}

TEST(Modules, KaimingInitHasTheRequestedScale) {
  Generator g(11);
  const Tensor w = empty({256, 128, 3, 3});
  nn::init::kaiming_normal_(w, g, nn::init::FanMode::FanOut);
  double var = 0;
  for (float v : w.to_vector<float>()) var += static_cast<double>(v) * v;
  var /= static_cast<double>(w.numel());
  EXPECT_NEAR(var, 2.0 / (256 * 9), 0.02 * 2.0 / (256 * 9));
  EXPECT_EQ(nn::init::fan(w, nn::init::FanMode::FanIn), 128 * 9);
}

}  // namespace
}  // namespace pb
