// Model zoo: torchvision-compatible parameter names and shapes, parameter counts, forward shapes.
#include <gtest/gtest.h>

#include <map>

#include "models/mlp.h"
#include "models/resnet.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/ops.h"

namespace pb {
namespace {

std::map<std::string, std::string> shapes_of(const nn::Module& m) {
  std::map<std::string, std::string> out;
  for (const auto& [name, t] : m.state()) out[name] = t.shape().str();
  return out;
}

TEST(ResNet, Cifar20NamesAndShapesFollowTorchvision) {
  Generator g(1);
  models::ResNetConfig c;
  c.depth = 20;
  c.in_channels = 1;
  const models::ResNet net(c, g);
  const auto s = shapes_of(net);
  EXPECT_EQ(s.at("conv1.weight"), "(16, 1, 3, 3)");
  EXPECT_EQ(s.at("bn1.running_var"), "(16)");
  EXPECT_EQ(s.at("layer1.0.conv1.weight"), "(16, 16, 3, 3)");
  EXPECT_EQ(s.at("layer1.2.bn2.bias"), "(16)");
  EXPECT_EQ(s.at("layer2.0.conv1.weight"), "(32, 16, 3, 3)");
  EXPECT_EQ(s.at("layer2.0.downsample.0.weight"), "(32, 16, 1, 1)");
  EXPECT_EQ(s.at("layer2.0.downsample.1.running_mean"), "(32)");
  EXPECT_EQ(s.at("layer3.2.conv2.weight"), "(64, 64, 3, 3)");
  EXPECT_EQ(s.at("fc.weight"), "(10, 64)");
  EXPECT_EQ(s.at("fc.bias"), "(10)");
  EXPECT_EQ(s.count("layer1.0.downsample.0.weight"), 0u);  // identity shortcut
  EXPECT_EQ(s.count("layer4.0.conv1.weight"), 0u);
  // Parameters, counted from the architecture: stem, 3 stages x 3 blocks, 2 projections, fc.
  int64_t expected = 16 * 1 * 9 + 2 * 16;
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t w = 16 << stage, in = stage == 0 ? 16 : w / 2;
    expected += (in * w * 9 + 2 * w) + (w * w * 9 + 2 * w);       // first block
    expected += 2 * ((w * w * 9 + 2 * w) + (w * w * 9 + 2 * w));  // two more
    if (stage > 0) expected += in * w + 2 * w;                    // projection
  }
  expected += 64 * 10 + 10;
  EXPECT_EQ(net.num_parameters(), expected);
}

TEST(ResNet, ImageNetParameterCountsMatchTorchvision) {
  // torchvision.models.resnet18() / resnet50(): 11,689,512 and 25,557,032 parameters.
  Generator g(1);
  models::ResNetConfig c;
  c.variant = "imagenet";
  c.num_classes = 1000;
  c.depth = 18;
  const models::ResNet r18(c, g);
  EXPECT_EQ(r18.num_parameters(), 11689512);
  const auto s = shapes_of(r18);
  EXPECT_EQ(s.at("conv1.weight"), "(64, 3, 7, 7)");
  EXPECT_EQ(s.at("layer4.1.conv2.weight"), "(512, 512, 3, 3)");
  EXPECT_EQ(s.at("fc.weight"), "(1000, 512)");
  c.depth = 50;
  const models::ResNet r50(c, g);
  EXPECT_EQ(r50.num_parameters(), 25557032);
  const auto s50 = shapes_of(r50);
  EXPECT_EQ(s50.at("layer1.0.conv3.weight"), "(256, 64, 1, 1)");
  EXPECT_EQ(s50.at("layer1.0.downsample.0.weight"), "(256, 64, 1, 1)");
  EXPECT_EQ(s50.at("layer2.0.conv2.weight"), "(128, 128, 3, 3)");  // stride on the 3x3 (v1.5)
  EXPECT_EQ(s50.at("layer4.2.bn3.running_var"), "(2048)");
  EXPECT_EQ(s50.at("fc.weight"), "(1000, 2048)");
}

TEST(ResNet, ForwardShapesAndBackwardForEveryVariant) {
  Generator g(2);
  struct Case {
    std::string variant;
    int64_t depth, width, in_ch, hw;
    std::string norm;
  };
  for (const Case& k : {Case{"cifar", 20, 1, 1, 28, "batch"}, Case{"cifar", 20, 1, 3, 32, "ghost"},
                        Case{"cifar", 20, 1, 3, 32, "none"}, Case{"wide", 10, 2, 3, 32, "batch"},
                        Case{"imagenet", 18, 1, 3, 64, "batch"}}) {
    models::ResNetConfig c;
    c.variant = k.variant;
    c.depth = k.depth;
    c.width_factor = k.width;
    c.in_channels = k.in_ch;
    c.norm.kind = k.norm;
    c.norm.virtual_batch_size = 2;
    models::ResNet net(c, g);
    Generator xg(3);
    const Tensor x = normal({4, k.in_ch, k.hw, k.hw}, 0, 1, xg);
    const Tensor logits = net(x);
    EXPECT_EQ(logits.shape(), Shape({4, 10})) << net.describe();
    const Tensor loss =
        ops::softmax_cross_entropy(logits, from_vector<int32_t>({0, 1, 2, 3}, {4}), Tensor{});
    loss.backward();
    for (const auto& [name, p] : net.named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << net.describe() << ": no gradient for " << name;
    }
    EXPECT_EQ(autograd::tape_size(), 0u);
  }
}

TEST(ResNet, ZeroInitResidualMakesEveryBlockStartAsIdentityBranch) {
  Generator g(4);
  models::ResNetConfig c;
  c.norm.zero_init_residual = true;
  const models::ResNet net(c, g);
  int zeroed = 0;
  for (const auto& [name, t] : net.named_parameters()) {
    if (name.ends_with("bn2.weight")) {
      for (float v : t.to_vector<float>()) EXPECT_EQ(v, 0.0f) << name;
      ++zeroed;
    }
  }
  EXPECT_EQ(zeroed, 9);
}

TEST(ResNet, InvalidConfigsNameTheProblem) {
  Generator g(5);
  models::ResNetConfig c;
  c.depth = 21;
  try {
    models::ResNet net(c, g);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "resnet: cifar depth 21 is not 6n+2 (20, 32, 44, 56, 110, ...)");
  }
  c.depth = 20;
  c.norm.kind = "group";
  EXPECT_THROW(models::ResNet(c, g), Error);
  c.norm.kind = "batch";
  models::ResNet net(c, g);
  EXPECT_THROW(net(zeros({2, 1, 28, 28})), ShapeError);  // expects 3 channels
}

}  // namespace
}  // namespace pb
