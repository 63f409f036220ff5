#pragma once
// The model zoo by name, for the trainer: the [model] section of a training config and the
// function that builds the network it describes (models are created by name from config).
#include "runtime/train/train_config.h"

namespace pb::models {

// [model] keys: name (mlp | resnet), variant, depth, width_factor, hidden, activation, norm,
// virtual_batch_size, bn_momentum, zero_init_residual, dropout.
train::ModelBuilder model_zoo();

}  // namespace pb::models
