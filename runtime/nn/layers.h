#pragma once
// The layers models are built from. Parameter and buffer names follow PyTorch (weight, bias,
// running_mean, running_var) so checkpoints map onto torchvision models.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "runtime/nn/module.h"
#include "runtime/ops/ops.h"

namespace pb::nn {

// Every layer is created on the CPU in float32; Module::to moves it.

// y = x W^T + b; x:(M,in) -> (M,out). Default init: PyTorch's (kaiming_uniform a=sqrt(5)).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 private:
  int64_t in_, out_;
  Tensor weight_, bias_;
};

struct Conv2dConfig {
  int64_t kernel = 3, stride = 1, padding = 0;
  bool bias = true;
};

// x:(N,in,H,W) -> (N,out,P,Q), square kernel/stride/padding.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, const Conv2dConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 private:
  int64_t in_, out_;
  Conv2dConfig config_;
  Tensor weight_, bias_;
};

struct BatchNormConfig {
  double momentum = 0.1;
  double eps = 1e-5;
  bool affine = true;
  // Ghost batch norm group size (0: ordinary batch norm); see kernels/batchnorm.h.
  int64_t virtual_batch_size = 0;
  // Fuses the ReLU that follows the norm (y = max(bn(x), 0)).
  bool relu = false;
  // Marks the last norm of a residual branch for init::zero_init_residual_branches.
  bool last_in_residual_branch = false;
};

// Batch norm for (N,C) and (N,C,H,W) inputs (PyTorch's BatchNorm1d and BatchNorm2d).
// Parameters weight, bias (when affine); buffers running_mean, running_var.
class BatchNorm : public Module {
 public:
  BatchNorm(int64_t channels, const BatchNormConfig& config = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  const BatchNormConfig& config() const { return config_; }
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  Tensor running_mean() const { return running_mean_; }
  Tensor running_var() const { return running_var_; }

 private:
  int64_t channels_;
  BatchNormConfig config_;
  Tensor weight_, bias_, running_mean_, running_var_;
};

// Normalises over the last dimension of size `features`.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

 private:
  int64_t features_;
  double eps_;
  Tensor weight_, bias_;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return ops::relu(x); }
  std::string describe() const override { return "ReLU()"; }
};

class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return ops::gelu(x); }
  std::string describe() const override { return "GELU()"; }
};

// Dropout with its own counter-based generator (state: seed and offset).
class Dropout : public Module {
 public:
  Dropout(double p, uint64_t seed);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Generator& generator() { return gen_; }

 private:
  double p_;
  Generator gen_;
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding = 0);
  Tensor forward(const Tensor& x) override { return ops::max_pool2d(x, options_); }
  std::string describe() const override;

 private:
  ops::Pool2dOptions options_;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int64_t kernel, int64_t stride, int64_t padding = 0);
  Tensor forward(const Tensor& x) override { return ops::avg_pool2d(x, options_); }
  std::string describe() const override;

 private:
  ops::Pool2dOptions options_;
};

// (N,C,H,W) -> (N,C)
class GlobalAvgPool : public Module {
 public:
  Tensor forward(const Tensor& x) override { return ops::global_avg_pool(x); }
  std::string describe() const override { return "GlobalAvgPool()"; }
};

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x.flatten(1); }
  std::string describe() const override { return "Flatten()"; }
};

// Children named "0", "1", ... run in order.
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> module);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Sequential()"; }
  std::size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace pb::nn
