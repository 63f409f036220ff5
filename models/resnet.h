#pragma once
// ResNets (He et al. 2016) with torchvision's parameter names, so a checkpoint loads into
// torchvision.models.resnet* (ImageNet style) or the matching CIFAR-style definition:
//   conv1.weight, bn1.{weight,bias,running_mean,running_var},
//   layer<s>.<b>.conv<i>.weight, layer<s>.<b>.bn<i>.*, layer<s>.<b>.downsample.{0,1}.*, fc.*
//
// CIFAR style (depth 6n+2: 20, 32, 44, 56, 110): 3x3 stem (16 channels, stride 1, no max pool)
// adapting to 1- or 3-channel inputs of 28x28 or 32x32, three stages of n basic blocks with
// 16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pool, fc.
// Shortcuts that change shape are 1x1 convolution + norm projections (option B).
// ImageNet style: ResNet-18/34 (basic blocks) and ResNet-50/101 (bottlenecks, stride on the 3x3
// as in torchvision v1.5), 7x7 stride-2 stem and 3x3 stride-2 max pool, 224x224 inputs.
// Wide ResNet (Zagoruyko & Komodakis 2016), WRN-depth-k for CIFAR-sized inputs: pre-activation
// basic blocks, (depth - 4) / 6 blocks per stage, widths 16k/32k/64k.
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/nn/layers.h"

namespace pb::models {

struct NormConfig {
  std::string kind = "batch";      // batch | ghost | none
  int64_t virtual_batch_size = 0;  // ghost batch norm group size (kind = ghost)
  double momentum = 0.1;
  double eps = 1e-5;
  bool zero_init_residual = false;  // zero the last norm scale of every residual branch
};

struct ResNetConfig {
  std::string variant = "cifar";  // cifar | imagenet | wide
  int64_t depth = 20;
  int64_t width_factor = 1;  // wide only
  int64_t in_channels = 3;
  int64_t num_classes = 10;
  double dropout = 0.0;  // wide only: between the two convolutions of a block
  NormConfig norm;
};

class ResNet : public nn::Module {
 public:
  ResNet(const ResNetConfig& config, Generator& gen);
  // x: (N, in_channels, H, W) -> logits (N, num_classes)
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  const ResNetConfig& config() const { return config_; }

 private:
  ResNetConfig config_;
  std::shared_ptr<nn::Conv2d> conv1_;
  std::shared_ptr<nn::Module> bn1_;  // a norm, or nullptr for norm = none
  std::shared_ptr<nn::MaxPool2d> maxpool_;
  std::vector<std::shared_ptr<nn::Sequential>> stages_;
  std::shared_ptr<nn::Module> final_norm_;  // wide (pre-activation) only
  std::shared_ptr<nn::Linear> fc_;
};

// Validates the config and names the problem: "resnet: cifar depth 21 is not 6n+2 ...".
void validate(const ResNetConfig& config);

}  // namespace pb::models
