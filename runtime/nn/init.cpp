#include "runtime/nn/init.h"

#include <cmath>

#include "runtime/nn/layers.h"

namespace pb::nn::init {

int64_t fan(const Tensor& w, FanMode mode) {
  if (w.ndim() < 2) {
    fail("init: fan is defined for tensors with >= 2 dimensions, got shape {}", w.shape().str());
  }
  int64_t receptive = 1;
  for (int i = 2; i < w.ndim(); ++i) receptive *= w.dim(i);
  return (mode == FanMode::FanIn ? w.dim(1) : w.dim(0)) * receptive;
}

// Draws on the host and copies into t, wherever it lives.
static void fill_from(const Tensor& t, const Tensor& host_values) {
  t.copy_(host_values);
}

void kaiming_normal_(const Tensor& w, Generator& gen, FanMode mode) {
  const double stddev = std::sqrt(2.0 / static_cast<double>(fan(w, mode)));
  normal_(w, 0.0, stddev, gen);
}

void kaiming_uniform_(const Tensor& w, Generator& gen, double a, FanMode mode) {
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double bound = gain * std::sqrt(3.0 / static_cast<double>(fan(w, mode)));
  uniform_(w, -bound, bound, gen);
}

void uniform_(const Tensor& t, double low, double high, Generator& gen) {
  fill_from(t, uniform(t.shape(), low, high, gen, TensorOptions{}.with_dtype(t.dtype())));
}

void normal_(const Tensor& t, double mean, double stddev, Generator& gen) {
  fill_from(t, normal(t.shape(), mean, stddev, gen, TensorOptions{}.with_dtype(t.dtype())));
}

void constant_(const Tensor& t, double value) {
  fill_from(t, full(t.shape(), value, TensorOptions{}.with_dtype(t.dtype())));
}

int zero_init_residual_branches(Module& root) {
  int count = 0;
  root.apply([&](Module& m) {
    auto* bn = dynamic_cast<BatchNorm*>(&m);
    if (!bn || !bn->config().last_in_residual_branch) return;
    if (!bn->weight().defined()) {
      fail("zero_init_residual_branches: {} at '{}' has no scale (affine=false)", bn->describe(),
           bn->path());
    }
    zeros_(bn->weight());
    ++count;
  });
  return count;
}

}  // namespace pb::nn::init
