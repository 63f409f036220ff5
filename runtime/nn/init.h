#pragma once
// Parameter initialisers. All fill a tensor in place (on its device) from a seeded generator,
// so model initialisation is reproducible from the model seed alone.
#include "runtime/core/tensor.h"

namespace pb::nn {
class Module;
}

namespace pb::nn::init {

enum class FanMode { FanIn, FanOut };

// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field, where the
// receptive field is the product of dims 2.. (1 for a matrix). Throws for fewer than 2 dims.
int64_t fan(const Tensor& w, FanMode mode);

// He et al. 2015 for ReLU networks: N(0, gain^2 / fan), gain = sqrt(2).
void kaiming_normal_(const Tensor& w, Generator& gen, FanMode mode = FanMode::FanOut);
// U(-b, b), b = gain * sqrt(3 / fan), gain = sqrt(2 / (1 + a^2)) (a: negative slope; a = sqrt(5)
// gives PyTorch's default Linear/Conv init, b = 1/sqrt(fan_in)).
void kaiming_uniform_(const Tensor& w, Generator& gen, double a = 0.0,
                      FanMode mode = FanMode::FanIn);
void uniform_(const Tensor& t, double low, double high, Generator& gen);
void normal_(const Tensor& t, double mean, double stddev, Generator& gen);
void constant_(const Tensor& t, double value);
inline void zeros_(const Tensor& t) {
  constant_(t, 0.0);
}
inline void ones_(const Tensor& t) {
  constant_(t, 1.0);
}

// Zero-initialises the scale (weight) of every batch norm created with
// last_in_residual_branch = true under `root`, so each residual block starts as the identity
// (Goyal et al. 2017). Returns how many were zeroed.
int zero_init_residual_branches(Module& root);

}  // namespace pb::nn::init
