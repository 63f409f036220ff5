#pragma once
// The model zoo by name: the [model] section of a training config (its keys, declared once here)
// and the function that builds the network a resolved config describes. Models are created by
// name from config; the trainer (train/) calls these, models/ knows nothing of the trainer.
#include <cstdint>
#include <memory>

#include "runtime/config/config.h"
#include "runtime/core/random.h"
#include "runtime/nn/module.h"

namespace pb::models {

// What a model needs to know of the data.
struct DataShape {
  int64_t channels, height, width, num_classes;
};

// [model] keys: name (mlp | resnet), variant, depth, width_factor, hidden, activation, norm,
// virtual_batch_size, bn_momentum, zero_init_residual, dropout.
void add_model_keys(config::Schema& schema);

// The network of a resolved config's [model] section for inputs of `data`'s shape, initialised
// from `init`.
std::shared_ptr<nn::Module> build_model(const config::Config& config, const DataShape& data,
                                        Generator& init);

}  // namespace pb::models
