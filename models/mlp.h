#pragma once
// Multi-layer perceptron: flatten -> [Linear -> (norm) -> activation -> (dropout)] per hidden
// width -> Linear. Parameters: layers.<i>.weight / layers.<i>.bias (Sequential indices).
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/nn/layers.h"

namespace pb::models {

struct MlpConfig {
  int64_t in_features = 784;
  std::vector<int64_t> hidden = {256, 128};
  int64_t num_classes = 10;
  std::string activation = "relu";  // relu | gelu
  std::string norm = "none";        // none | batch | layer
  int64_t virtual_batch_size = 0;   // ghost batch norm group size when norm = batch
  double dropout = 0.0;
};

class Mlp : public nn::Module {
 public:
  Mlp(const MlpConfig& config, Generator& gen);
  // x: (N, ...) flattened to (N, in_features) -> logits (N, num_classes)
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

 private:
  MlpConfig config_;
  std::shared_ptr<nn::Sequential> layers_;
};

}  // namespace pb::models
