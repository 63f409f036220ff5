#include "runtime/nn/layers.h"

#include <fmt/format.h>

#include <cmath>

#include "runtime/nn/init.h"

namespace pb::nn {

// ---- Linear -------------------------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias)
    : in_(in_features), out_(out_features) {
  if (in_ < 1 || out_ < 1) fail("Linear({}, {}): feature counts must be >= 1", in_, out_);
  weight_ = register_parameter("weight", empty(Shape{out_, in_}));
  init::kaiming_uniform_(weight_, gen, std::sqrt(5.0));
  if (bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
    bias_ = register_parameter("bias", empty(Shape{out_}));
    init::uniform_(bias_, -bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& x) {
  return ops::linear(x, weight_, bias_);
}

std::string Linear::describe() const {
  return fmt::format("Linear({}, {}, bias={})", in_, out_, bias_.defined());
}

// ---- Conv2d -------------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, const Conv2dConfig& config,
               Generator& gen)
    : in_(in_channels), out_(out_channels), config_(config) {
  if (in_ < 1 || out_ < 1 || config.kernel < 1 || config.stride < 1 || config.padding < 0) {
    fail("Conv2d({}, {}, kernel={}, stride={}, padding={}): invalid configuration", in_, out_,
         config.kernel, config.stride, config.padding);
  }
  weight_ = register_parameter("weight", empty(Shape{out_, in_, config.kernel, config.kernel}));
  init::kaiming_uniform_(weight_, gen, std::sqrt(5.0));
  if (config.bias) {
    const double fan_in = static_cast<double>(in_ * config.kernel * config.kernel);
    const double bound = 1.0 / std::sqrt(fan_in);
    bias_ = register_parameter("bias", empty(Shape{out_}));
    init::uniform_(bias_, -bound, bound, gen);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  const ops::Conv2dOptions o{config_.stride, config_.stride, config_.padding, config_.padding};
  return ops::conv2d(x, weight_, bias_, o);
}

std::string Conv2d::describe() const {
  return fmt::format("Conv2d({}, {}, kernel={}, stride={}, padding={}, bias={})", in_, out_,
                     config_.kernel, config_.stride, config_.padding, config_.bias);
}

// ---- BatchNorm ----------------------------------------------------------------------------------

BatchNorm::BatchNorm(int64_t channels, const BatchNormConfig& config)
    : channels_(channels), config_(config) {
  if (channels < 1) fail("BatchNorm({}): channels must be >= 1", channels);
  if (config.virtual_batch_size < 0) {
    fail("BatchNorm({}): virtual_batch_size must be >= 0, got {}", channels,
         config.virtual_batch_size);
  }
  if (config.affine) {
    weight_ = register_parameter("weight", ones(Shape{channels}));
    bias_ = register_parameter("bias", zeros(Shape{channels}));
  }
  running_mean_ = register_buffer("running_mean", zeros(Shape{channels}));
  running_var_ = register_buffer("running_var", ones(Shape{channels}));
}

Tensor BatchNorm::forward(const Tensor& x) {
  const ops::BatchNormOptions o{is_training(), config_.momentum, config_.eps,
                                config_.virtual_batch_size, config_.relu};
  return ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, o);
}

std::string BatchNorm::describe() const {
  std::string s = fmt::format("BatchNorm({}, momentum={}, eps={}, affine={}", channels_,
                              config_.momentum, config_.eps, config_.affine);
  if (config_.virtual_batch_size > 0) {
    s += fmt::format(", virtual_batch_size={}", config_.virtual_batch_size);
  }
  if (config_.relu) s += ", relu";
  return s + ")";
}

// ---- LayerNorm ----------------------------------------------------------------------------------

LayerNorm::LayerNorm(int64_t features, double eps, bool affine) : features_(features), eps_(eps) {
  if (features < 1) fail("LayerNorm({}): features must be >= 1", features);
  if (affine) {
    weight_ = register_parameter("weight", ones(Shape{features}));
    bias_ = register_parameter("bias", zeros(Shape{features}));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  return ops::layer_norm(x, weight_, bias_, eps_);
}

std::string LayerNorm::describe() const {
  return fmt::format("LayerNorm({}, eps={}, affine={})", features_, eps_, weight_.defined());
}

// ---- Dropout and pooling ------------------------------------------------------------------------

Dropout::Dropout(double p, uint64_t seed) : p_(p), gen_(seed) {
  if (!(p >= 0.0 && p < 1.0)) fail("Dropout: p must be in [0, 1), got {}", p);
}

Tensor Dropout::forward(const Tensor& x) {
  return ops::dropout(x, p_, is_training(), gen_);
}

std::string Dropout::describe() const {
  return fmt::format("Dropout(p={})", p_);
}

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : options_{kernel, kernel, stride, stride, padding, padding} {}

std::string MaxPool2d::describe() const {
  return fmt::format("MaxPool2d(kernel={}, stride={}, padding={})", options_.kernel_h,
                     options_.stride_h, options_.pad_h);
}

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : options_{kernel, kernel, stride, stride, padding, padding} {}

std::string AvgPool2d::describe() const {
  return fmt::format("AvgPool2d(kernel={}, stride={}, padding={})", options_.kernel_h,
                     options_.stride_h, options_.pad_h);
}

// ---- Sequential ---------------------------------------------------------------------------------

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

void Sequential::push_back(std::shared_ptr<Module> module) {
  layers_.push_back(register_module(std::to_string(layers_.size()), std::move(module)));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = (*layer)(h);
  return h;
}

}  // namespace pb::nn
