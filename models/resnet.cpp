#include "models/resnet.h"

#include <fmt/format.h>

#include "runtime/nn/init.h"
#include "runtime/ops/ops.h"

namespace pb::models {
namespace {

// A norm layer per the config, or nullptr for kind = none. `relu` fuses the ReLU that follows
// it; `last` marks the last norm of a residual branch for zero-init.
std::shared_ptr<nn::Module> make_norm(int64_t channels, const NormConfig& c, bool relu, bool last) {
  if (c.kind == "none") return nullptr;
  nn::BatchNormConfig bn;
  bn.momentum = c.momentum;
  bn.eps = c.eps;
  bn.virtual_batch_size = c.kind == "ghost" ? c.virtual_batch_size : 0;
  bn.relu = relu;
  bn.last_in_residual_branch = last;
  return std::make_shared<nn::BatchNorm>(channels, bn);
}

// norm(x) with its fused ReLU, or relu(x) / x without a norm.
Tensor norm_act(nn::Module* norm, const Tensor& x, bool relu) {
  if (norm) return (*norm)(x);
  return relu ? ops::relu(x) : x;
}

std::shared_ptr<nn::Conv2d> conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool bias,
                                 Generator& gen) {
  return std::make_shared<nn::Conv2d>(in, out, nn::Conv2dConfig{kernel, stride, kernel / 2, bias},
                                      gen);
}

// Projection shortcut: downsample.0 = 1x1 conv, downsample.1 = norm (when there is one).
std::shared_ptr<nn::Sequential> projection(int64_t in, int64_t out, int64_t stride,
                                           const NormConfig& norm, Generator& gen) {
  auto ds = std::make_shared<nn::Sequential>();
  ds->push_back(conv(in, out, 1, stride, norm.kind == "none", gen));
  if (auto n = make_norm(out, norm, false, false)) ds->push_back(n);
  return ds;
}

// conv3x3-norm-relu-conv3x3-norm, + shortcut, relu.
class BasicBlock : public nn::Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, const NormConfig& norm, Generator& gen) {
    const bool bias = norm.kind == "none";
    conv1_ = register_module("conv1", conv(in, out, 3, stride, bias, gen));
    if (auto n = make_norm(out, norm, true, false)) bn1_ = register_module("bn1", n);
    conv2_ = register_module("conv2", conv(out, out, 3, 1, bias, gen));
    if (auto n = make_norm(out, norm, false, true)) bn2_ = register_module("bn2", n);
    if (stride != 1 || in != out) {
      downsample_ = register_module("downsample", projection(in, out, stride, norm, gen));
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = norm_act(bn1_.get(), (*conv1_)(x), true);
    h = norm_act(bn2_.get(), (*conv2_)(h), false);
    return ops::add_relu(h, downsample_ ? (*downsample_)(x) : x);
  }
  std::string describe() const override { return "BasicBlock()"; }

 private:
  std::shared_ptr<nn::Conv2d> conv1_, conv2_;
  std::shared_ptr<nn::Module> bn1_, bn2_;
  std::shared_ptr<nn::Sequential> downsample_;
};

// conv1x1-norm-relu-conv3x3(stride)-norm-relu-conv1x1(x4)-norm, + shortcut, relu.
class Bottleneck : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in, int64_t planes, int64_t stride, const NormConfig& norm, Generator& gen) {
    const bool bias = norm.kind == "none";
    const int64_t out = planes * kExpansion;
    conv1_ = register_module("conv1", conv(in, planes, 1, 1, bias, gen));
    if (auto n = make_norm(planes, norm, true, false)) bn1_ = register_module("bn1", n);
    conv2_ = register_module("conv2", conv(planes, planes, 3, stride, bias, gen));
    if (auto n = make_norm(planes, norm, true, false)) bn2_ = register_module("bn2", n);
    conv3_ = register_module("conv3", conv(planes, out, 1, 1, bias, gen));
    if (auto n = make_norm(out, norm, false, true)) bn3_ = register_module("bn3", n);
    if (stride != 1 || in != out) {
      downsample_ = register_module("downsample", projection(in, out, stride, norm, gen));
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = norm_act(bn1_.get(), (*conv1_)(x), true);
    h = norm_act(bn2_.get(), (*conv2_)(h), true);
    h = norm_act(bn3_.get(), (*conv3_)(h), false);
    return ops::add_relu(h, downsample_ ? (*downsample_)(x) : x);
  }
  std::string describe() const override { return "Bottleneck()"; }

 private:
  std::shared_ptr<nn::Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<nn::Module> bn1_, bn2_, bn3_;
  std::shared_ptr<nn::Sequential> downsample_;
};

// Pre-activation wide block: norm-relu-conv3x3(stride)-norm-relu-(dropout)-conv3x3, + shortcut
// (a 1x1 conv of the pre-activated input when the shape changes).
class WideBlock : public nn::Module {
 public:
  WideBlock(int64_t in, int64_t out, int64_t stride, double dropout, const NormConfig& norm,
            Generator& gen) {
    const bool bias = norm.kind == "none";
    if (auto n = make_norm(in, norm, true, false)) bn1_ = register_module("bn1", n);
    conv1_ = register_module("conv1", conv(in, out, 3, stride, bias, gen));
    if (auto n = make_norm(out, norm, true, true)) bn2_ = register_module("bn2", n);
    if (dropout > 0)
      dropout_ = register_module("dropout", std::make_shared<nn::Dropout>(dropout, gen.next_u64()));
    conv2_ = register_module("conv2", conv(out, out, 3, 1, bias, gen));
    if (stride != 1 || in != out) {
      auto ds = std::make_shared<nn::Sequential>();
      ds->push_back(conv(in, out, 1, stride, bias, gen));
      downsample_ = register_module("downsample", ds);
    }
  }
  Tensor forward(const Tensor& x) override {
    const Tensor pre = norm_act(bn1_.get(), x, true);
    Tensor h = norm_act(bn2_.get(), (*conv1_)(pre), true);
    if (dropout_) h = (*dropout_)(h);
    h = (*conv2_)(h);
    return ops::add(h, downsample_ ? (*downsample_)(pre) : x);
  }
  std::string describe() const override { return "WideBlock()"; }

 private:
  std::shared_ptr<nn::Module> bn1_, bn2_;
  std::shared_ptr<nn::Conv2d> conv1_, conv2_;
  std::shared_ptr<nn::Dropout> dropout_;
  std::shared_ptr<nn::Sequential> downsample_;
};

}  // namespace

void validate(const ResNetConfig& c) {
  if (c.variant == "cifar") {
    if (c.depth < 8 || (c.depth - 2) % 6 != 0) {
      fail("resnet: cifar depth {} is not 6n+2 (20, 32, 44, 56, 110, ...)", c.depth);
    }
  } else if (c.variant == "imagenet") {
    if (c.depth != 18 && c.depth != 34 && c.depth != 50 && c.depth != 101 && c.depth != 152) {
      fail("resnet: imagenet depth {} is not one of 18, 34, 50, 101, 152", c.depth);
    }
  } else if (c.variant == "wide") {
    if (c.depth < 10 || (c.depth - 4) % 6 != 0) {
      fail("resnet: wide depth {} is not 6n+4 (16, 22, 28, 40, ...)", c.depth);
    }
    if (c.width_factor < 1) fail("resnet: width_factor must be >= 1, got {}", c.width_factor);
  } else {
    fail("resnet: unknown variant '{}' (cifar, imagenet or wide)", c.variant);
  }
  if (c.in_channels < 1 || c.num_classes < 1) {
    fail("resnet: in_channels ({}) and num_classes ({}) must be >= 1", c.in_channels,
         c.num_classes);
  }
  if (c.norm.kind != "batch" && c.norm.kind != "ghost" && c.norm.kind != "none") {
    fail("resnet: unknown norm '{}' (batch, ghost or none)", c.norm.kind);
  }
  if (c.norm.kind == "ghost" && c.norm.virtual_batch_size < 1) {
    fail("resnet: ghost batch norm needs virtual_batch_size >= 1, got {}",
         c.norm.virtual_batch_size);
  }
  if (!(c.dropout >= 0 && c.dropout < 1))
    fail("resnet: dropout must be in [0, 1), got {}", c.dropout);
}

ResNet::ResNet(const ResNetConfig& c, Generator& gen) : config_(c) {
  validate(c);
  const NormConfig& norm = c.norm;
  const bool bias = norm.kind == "none";
  int64_t channels = 0;
  auto add_stage = [&](std::shared_ptr<nn::Sequential> stage) {
    stages_.push_back(register_module("layer" + std::to_string(stages_.size() + 1), stage));
  };

  if (c.variant == "imagenet") {
    conv1_ = register_module("conv1", std::make_shared<nn::Conv2d>(
                                          c.in_channels, 64, nn::Conv2dConfig{7, 2, 3, bias}, gen));
    if (auto n = make_norm(64, norm, true, false)) bn1_ = register_module("bn1", n);
    maxpool_ = register_module("maxpool", std::make_shared<nn::MaxPool2d>(3, 2, 1));
    const bool bottleneck = c.depth >= 50;
    const std::vector<int64_t> blocks = c.depth == 18    ? std::vector<int64_t>{2, 2, 2, 2}
                                        : c.depth == 101 ? std::vector<int64_t>{3, 4, 23, 3}
                                        : c.depth == 152 ? std::vector<int64_t>{3, 8, 36, 3}
                                                         : std::vector<int64_t>{3, 4, 6, 3};
    channels = 64;
    for (std::size_t s = 0; s < 4; ++s) {
      const int64_t planes = 64 << s;
      auto stage = std::make_shared<nn::Sequential>();
      for (int64_t b = 0; b < blocks[s]; ++b) {
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        if (bottleneck) {
          stage->push_back(std::make_shared<Bottleneck>(channels, planes, stride, norm, gen));
          channels = planes * Bottleneck::kExpansion;
        } else {
          stage->push_back(std::make_shared<BasicBlock>(channels, planes, stride, norm, gen));
          channels = planes;
        }
      }
      add_stage(stage);
    }
  } else {
    const bool wide = c.variant == "wide";
    const int64_t n = wide ? (c.depth - 4) / 6 : (c.depth - 2) / 6;
    const int64_t k = wide ? c.width_factor : 1;
    conv1_ = register_module("conv1", std::make_shared<nn::Conv2d>(
                                          c.in_channels, 16, nn::Conv2dConfig{3, 1, 1, bias}, gen));
    if (!wide) {
      if (auto nm = make_norm(16, norm, true, false)) bn1_ = register_module("bn1", nm);
    }
    channels = 16;
    for (int64_t s = 0; s < 3; ++s) {
      const int64_t width = (16 << s) * k;
      auto stage = std::make_shared<nn::Sequential>();
      for (int64_t b = 0; b < n; ++b) {
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        if (wide) {
          stage->push_back(
              std::make_shared<WideBlock>(channels, width, stride, c.dropout, norm, gen));
        } else {
          stage->push_back(std::make_shared<BasicBlock>(channels, width, stride, norm, gen));
        }
        channels = width;
      }
      add_stage(stage);
    }
    if (wide) {
      if (auto nm = make_norm(channels, norm, true, false))
        final_norm_ = register_module("bn_final", nm);
    }
  }
  fc_ = register_module("fc", std::make_shared<nn::Linear>(channels, c.num_classes, gen));

  // He-normal (fan_out) for every convolution, as torchvision does; norms start at 1/0.
  apply([&](nn::Module& m) {
    if (auto* cv = dynamic_cast<nn::Conv2d*>(&m)) {
      nn::init::kaiming_normal_(cv->weight(), gen, nn::init::FanMode::FanOut);
      if (cv->bias().defined()) nn::init::zeros_(cv->bias());
    }
  });
  if (norm.zero_init_residual) nn::init::zero_init_residual_branches(*this);
}

Tensor ResNet::forward(const Tensor& x) {
  if (x.ndim() != 4 || x.dim(1) != config_.in_channels) {
    fail<ShapeError>("resnet: input must be (N, {}, H, W), got {}", config_.in_channels,
                     x.shape().str());
  }
  Tensor h = (*conv1_)(x);
  // Post-activation ResNets normalise the stem; pre-activation (wide) blocks start with a norm.
  if (config_.variant != "wide") h = norm_act(bn1_.get(), h, true);
  if (maxpool_) h = (*maxpool_)(h);
  for (auto& stage : stages_) h = (*stage)(h);
  if (config_.variant == "wide") h = norm_act(final_norm_.get(), h, true);
  return (*fc_)(ops::global_avg_pool(h));
}

std::string ResNet::describe() const {
  if (config_.variant == "wide") {
    return fmt::format("WideResNet-{}-{}(in={}, classes={}, norm={})", config_.depth,
                       config_.width_factor, config_.in_channels, config_.num_classes,
                       config_.norm.kind);
  }
  return fmt::format("ResNet-{}({}, in={}, classes={}, norm={})", config_.depth, config_.variant,
                     config_.in_channels, config_.num_classes, config_.norm.kind);
}

}  // namespace pb::models
