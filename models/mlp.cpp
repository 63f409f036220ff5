#include "models/mlp.h"

#include <fmt/format.h>

namespace pb::models {

Mlp::Mlp(const MlpConfig& config, Generator& gen) : config_(config) {
  if (config.in_features < 1 || config.num_classes < 1) {
    fail("mlp: in_features ({}) and num_classes ({}) must be >= 1", config.in_features,
         config.num_classes);
  }
  if (config.activation != "relu" && config.activation != "gelu") {
    fail("mlp: unknown activation '{}' (relu or gelu)", config.activation);
  }
  if (config.norm != "none" && config.norm != "batch" && config.norm != "layer") {
    fail("mlp: unknown norm '{}' (none, batch or layer)", config.norm);
  }
  layers_ = register_module("layers", std::make_shared<nn::Sequential>());
  int64_t width = config.in_features;
  for (const int64_t h : config.hidden) {
    if (h < 1) fail("mlp: hidden width {} must be >= 1", h);
    layers_->push_back(std::make_shared<nn::Linear>(width, h, gen));
    if (config.norm == "batch") {
      nn::BatchNormConfig bn;
      bn.virtual_batch_size = config.virtual_batch_size;
      layers_->push_back(std::make_shared<nn::BatchNorm>(h, bn));
    } else if (config.norm == "layer") {
      layers_->push_back(std::make_shared<nn::LayerNorm>(h));
    }
    if (config.activation == "relu") {
      layers_->push_back(std::make_shared<nn::ReLU>());
    } else {
      layers_->push_back(std::make_shared<nn::GELU>());
    }
    if (config.dropout > 0) {
      layers_->push_back(std::make_shared<nn::Dropout>(config.dropout, gen.next_u64()));
    }
    width = h;
  }
  layers_->push_back(std::make_shared<nn::Linear>(width, config.num_classes, gen));
}

Tensor Mlp::forward(const Tensor& x) {
  if (x.ndim() < 2) fail("mlp: input must be (N, ...), got shape {}", x.shape().str());
  const Tensor flat = x.ndim() == 2 ? x : x.flatten(1);
  if (flat.dim(1) != config_.in_features) {
    fail("mlp: input {} has {} features per example, the model expects {}", x.shape().str(),
         flat.dim(1), config_.in_features);
  }
  return (*layers_)(flat);
}

std::string Mlp::describe() const {
  return fmt::format("Mlp(in={}, hidden=[{}], classes={}, activation={}, norm={})",
                     config_.in_features, fmt::join(config_.hidden, ", "), config_.num_classes,
                     config_.activation, config_.norm);
}

}  // namespace pb::models
