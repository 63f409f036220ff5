#pragma once
// The functional ops: each checks its inputs (ShapeError/ValueError naming the op, the module
// and the shapes), runs the CPU or CUDA kernel for the inputs' device, and records its backward
// on the tape when an input requires a gradient. Inputs of one op share a device and a dtype.
// Shapes follow kernels/*.h; optional tensors may be passed undefined (Tensor{}).
#include <cstdint>
#include <vector>

#include "runtime/core/tensor.h"

namespace pb::ops {

// ---- linear algebra ---------------------------------------------------------------------------
// a:(M,K) b:(K,N) -> (M,N)
Tensor matmul(const Tensor& a, const Tensor& b);
// x:(M,K) w:(N,K) b:(N)? -> (M,N) = x w^T + b
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- convolution and pooling ------------------------------------------------------------------
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};
// x:(N,C,H,W) w:(K,C,R,S) b:(K)? -> (N,K,P,Q)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& options);

struct Pool2dOptions {
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h = 0, pad_w = 0;
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
// Divides by kernel_h*kernel_w, padded cells included (PyTorch's count_include_pad=True).
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
// x:(N,C,H,W) -> (N,C)
Tensor global_avg_pool(const Tensor& x);

// ---- normalisation ----------------------------------------------------------------------------
struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;  // running <- (1 - momentum) * running + momentum * batch statistic
  double eps = 1e-5;
  // Ghost batch norm: statistics per consecutive group of this many examples; 0 (or >= N)
  // means ordinary batch norm. In training a batch must be a multiple of it (see
  // kernels/batchnorm.h for the exact semantics).
  int64_t virtual_batch_size = 0;
  // Fuses a ReLU after the normalisation: y = max(bn(x), 0), one op on the tape.
  bool relu = false;
};
// x:(N,C) or (N,C,H,W); gamma, beta:(C)? ; running_mean, running_var:(C), updated in place
// (not recorded) in training mode, read in eval mode. Running stats may be undefined in training.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  const Tensor& running_mean, const Tensor& running_var,
                  const BatchNormOptions& options);
// Normalises over the last dimension D; gamma, beta:(D)?
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

// ---- elementwise ------------------------------------------------------------------------------
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);  // same shape (residual connections)
// relu(a + b), fused: the end of a residual block.
Tensor add_relu(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double alpha);
// In place a += alpha * b, never recorded (gradient accumulation, plain SGD steps).
void add_(const Tensor& a, const Tensor& b, double alpha = 1.0);
// Inverted dropout with a counter-based mask drawn from gen (kernels/dropout.h); identity when
// !training or p == 0. 0 <= p < 1.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- shape ------------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, std::vector<int64_t> dims);  // one dim may be -1

// ---- losses and metrics -----------------------------------------------------------------------
// logits:(N,K), labels:(N) int32 in [0,K), weights:(N)? -> scalar () (see kernels/loss.h).
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& weights,
                             double label_smoothing = 0.0);
// mean((pred - target)^2) -> scalar ()
Tensor mse_loss(const Tensor& pred, const Tensor& target);
// -> (2) = {weighted errors, total weight}; never recorded.
Tensor topk_errors(const Tensor& logits, const Tensor& labels, const Tensor& weights, int64_t k);

}  // namespace pb::ops
