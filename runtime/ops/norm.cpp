// batch_norm (incl. ghost batch norm) and layer_norm, kernels/batchnorm.h and kernels/layernorm.h.
#include "kernels/batchnorm.h"
#include "kernels/layernorm.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  const Tensor& running_mean, const Tensor& running_var,
                  const BatchNormOptions& o) {
  constexpr OpKind op = OpKind::BatchNorm;
  check_inputs(op, {{"input", &x}},
               {{"weight", &gamma},
                {"bias", &beta},
                {"running_mean", &running_mean},
                {"running_var", &running_var}});
  if (x.ndim() != 2 && x.ndim() != 4) {
    op_fail(op, "input must be (N,C) or (N,C,H,W), got {}", x.shape().str());
  }
  const int64_t N = x.dim(0), C = x.dim(1), L = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  check_vector(op, "weight", gamma, C);
  check_vector(op, "bias", beta, C);
  check_vector(op, "running_mean", running_mean, C);
  check_vector(op, "running_var", running_var, C);
  if (running_mean.defined() != running_var.defined()) {
    op_fail(op, "running_mean and running_var must be given together");
  }
  if (!(o.eps > 0)) op_value_fail(op, "eps must be > 0, got {}", o.eps);
  if (!(o.momentum >= 0 && o.momentum <= 1)) {
    op_value_fail(op, "momentum must be in [0, 1], got {}", o.momentum);
  }
  if (o.virtual_batch_size < 0) {
    op_value_fail(op, "virtual_batch_size must be >= 0, got {}", o.virtual_batch_size);
  }
  if (N == 0) op_fail(op, "input {} is an empty batch", x.shape().str());
  const int64_t V = o.virtual_batch_size == 0 ? N : o.virtual_batch_size;
  const kernels::BatchNormShape s{N, C, L, V};
  const TensorOptions like = TensorOptions{}.with_dtype(x.dtype()).with_device(x.device());
  Tensor y = empty_like(x);
  const bool relu = o.relu;
  const float eps = static_cast<float>(o.eps);
  [[maybe_unused]] const float momentum = static_cast<float>(o.momentum);  // CUDA kernels only

  if (!o.training) {
    if (!running_mean.defined()) op_fail(op, "eval mode needs running_mean and running_var");
    dispatch(
        op, x,
        [&]<typename T>() {
          auto f = relu ? kernels::batchnorm_relu_forward_eval_cpu<T>
                        : kernels::batchnorm_forward_eval_cpu<T>;
          f(s, ptr<T>(x), ptr<T>(gamma), ptr<T>(beta), ptr<T>(running_mean), ptr<T>(running_var),
            static_cast<T>(o.eps), ptr<T>(y));
        },
        PB_CUDA_KERNEL((relu ? kernels::batchnorm_relu_forward_eval_cuda
                             : kernels::batchnorm_forward_eval_cuda)(
            stream_for(x.device()), s, ptr<float>(x), ptr<float>(gamma), ptr<float>(beta),
            ptr<float>(running_mean), ptr<float>(running_var), eps, ptr<float>(y))));
    if (autograd::needs_grad({&x, &gamma, &beta})) {
      autograd::record(
          op, {x, gamma, beta}, y,
          [x, gamma, beta, running_mean, running_var, s, eps, relu, y](const Tensor& gy) {
            Tensor gx = empty_like(x);
            Tensor gg = gamma.defined() ? empty_like(gamma) : Tensor{};
            Tensor gb = beta.defined() ? empty_like(beta) : Tensor{};
            dispatch(
                OpKind::BatchNorm, x,
                [&]<typename T>() {
                  if (relu) {
                    kernels::batchnorm_relu_backward_eval_cpu<T>(
                        s, ptr<T>(x), ptr<T>(y), ptr<T>(gy), ptr<T>(gamma), ptr<T>(running_mean),
                        ptr<T>(running_var), static_cast<T>(eps), ptr<T>(gx), ptr<T>(gg),
                        ptr<T>(gb));
                  } else {
                    kernels::batchnorm_backward_eval_cpu<T>(
                        s, ptr<T>(x), ptr<T>(gy), ptr<T>(gamma), ptr<T>(running_mean),
                        ptr<T>(running_var), static_cast<T>(eps), ptr<T>(gx), ptr<T>(gg),
                        ptr<T>(gb));
                  }
                },
                PB_CUDA_KERNEL(
                    if (relu) {
                      kernels::batchnorm_relu_backward_eval_cuda(
                          stream_for(x.device()), s, ptr<float>(x), ptr<float>(y), ptr<float>(gy),
                          ptr<float>(gamma), ptr<float>(running_mean), ptr<float>(running_var), eps,
                          ptr<float>(gx), ptr<float>(gg), ptr<float>(gb));
                    } else {
                      kernels::batchnorm_backward_eval_cuda(
                          stream_for(x.device()), s, ptr<float>(x), ptr<float>(gy),
                          ptr<float>(gamma), ptr<float>(running_mean), ptr<float>(running_var), eps,
                          ptr<float>(gx), ptr<float>(gg), ptr<float>(gb));
                    }));
            return std::vector<Tensor>{gx, gg, gb};
          });
    }
    return y;
  }

  if (V < N && N % V != 0) {
    op_value_fail(op,
                  "batch of {} examples is not a multiple of virtual_batch_size {} (ghost batch "
                  "norm needs equal groups; choose a batch size divisible by it)",
                  N, V);
  }
  if (s.group_size() * L < 2) {
    op_value_fail(op,
                  "training needs more than one value per channel and group, got input {} "
                  "with groups of {}",
                  x.shape().str(), s.group_size());
  }
  Tensor save_mean = empty(Shape{s.groups(), C}, like);
  Tensor save_invstd = empty(Shape{s.groups(), C}, like);
  dispatch(
      op, x,
      [&]<typename T>() {
        auto f = relu ? kernels::batchnorm_relu_forward_train_cpu<T>
                      : kernels::batchnorm_forward_train_cpu<T>;
        f(s, ptr<T>(x), ptr<T>(gamma), ptr<T>(beta), static_cast<T>(o.eps),
          static_cast<T>(o.momentum), ptr<T>(y), ptr<T>(save_mean), ptr<T>(save_invstd),
          ptr<T>(running_mean), ptr<T>(running_var));
      },
      PB_CUDA_KERNEL((relu ? kernels::batchnorm_relu_forward_train_cuda
                           : kernels::batchnorm_forward_train_cuda)(
          stream_for(x.device()), s, ptr<float>(x), ptr<float>(gamma), ptr<float>(beta), eps,
          momentum, ptr<float>(y), ptr<float>(save_mean), ptr<float>(save_invstd),
          ptr<float>(running_mean), ptr<float>(running_var))));
  if (autograd::needs_grad({&x, &gamma, &beta})) {
    autograd::record(
        op, {x, gamma, beta}, y,
        [x, gamma, beta, save_mean, save_invstd, s, relu, y](const Tensor& gy) {
          Tensor gx = empty_like(x);
          Tensor gg = gamma.defined() ? empty_like(gamma) : Tensor{};
          Tensor gb = beta.defined() ? empty_like(beta) : Tensor{};
          dispatch(
              OpKind::BatchNorm, x,
              [&]<typename T>() {
                if (relu) {
                  kernels::batchnorm_relu_backward_train_cpu<T>(
                      s, ptr<T>(x), ptr<T>(y), ptr<T>(gy), ptr<T>(gamma), ptr<T>(save_mean),
                      ptr<T>(save_invstd), ptr<T>(gx), ptr<T>(gg), ptr<T>(gb));
                } else {
                  kernels::batchnorm_backward_train_cpu<T>(s, ptr<T>(x), ptr<T>(gy), ptr<T>(gamma),
                                                           ptr<T>(save_mean), ptr<T>(save_invstd),
                                                           ptr<T>(gx), ptr<T>(gg), ptr<T>(gb));
                }
              },
              PB_CUDA_KERNEL(
                  if (relu) {
                    kernels::batchnorm_relu_backward_train_cuda(
                        stream_for(x.device()), s, ptr<float>(x), ptr<float>(y), ptr<float>(gy),
                        ptr<float>(gamma), ptr<float>(save_mean), ptr<float>(save_invstd),
                        ptr<float>(gx), ptr<float>(gg), ptr<float>(gb));
                  } else {
                    kernels::batchnorm_backward_train_cuda(
                        stream_for(x.device()), s, ptr<float>(x), ptr<float>(gy), ptr<float>(gamma),
                        ptr<float>(save_mean), ptr<float>(save_invstd), ptr<float>(gx),
                        ptr<float>(gg), ptr<float>(gb));
                  }));
          return std::vector<Tensor>{gx, gg, gb};
        });
  }
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  constexpr OpKind op = OpKind::LayerNorm;
  check_inputs(op, {{"input", &x}}, {{"weight", &gamma}, {"bias", &beta}});
  if (x.ndim() < 1) op_fail(op, "input must have at least one dimension");
  if (!(eps > 0)) op_value_fail(op, "eps must be > 0, got {}", eps);
  const int64_t D = x.dim(-1);
  if (D == 0) op_fail(op, "input {} has an empty last dimension", x.shape().str());
  const int64_t M = x.numel() / D;
  check_vector(op, "weight", gamma, D);
  check_vector(op, "bias", beta, D);
  const TensorOptions like = TensorOptions{}.with_dtype(x.dtype()).with_device(x.device());
  Tensor y = empty_like(x);
  Tensor mean = empty(Shape{M}, like), invstd = empty(Shape{M}, like);
  dispatch(
      op, x,
      [&]<typename T>() {
        kernels::layernorm_forward_cpu<T>(M, D, ptr<T>(x), ptr<T>(gamma), ptr<T>(beta),
                                          static_cast<T>(eps), ptr<T>(y), ptr<T>(mean),
                                          ptr<T>(invstd));
      },
      PB_CUDA_KERNEL(kernels::layernorm_forward_cuda(
          stream_for(x.device()), M, D, ptr<float>(x), ptr<float>(gamma), ptr<float>(beta),
          static_cast<float>(eps), ptr<float>(y), ptr<float>(mean), ptr<float>(invstd))));
  if (autograd::needs_grad({&x, &gamma, &beta})) {
    autograd::record(
        op, {x, gamma, beta}, y, [x, gamma, beta, mean, invstd, M, D](const Tensor& gy) {
          Tensor gx = empty_like(x);
          Tensor gg = gamma.defined() ? empty_like(gamma) : Tensor{};
          Tensor gb = beta.defined() ? empty_like(beta) : Tensor{};
          dispatch(
              OpKind::LayerNorm, x,
              [&]<typename T>() {
                kernels::layernorm_backward_cpu<T>(M, D, ptr<T>(x), ptr<T>(gy), ptr<T>(gamma),
                                                   ptr<T>(mean), ptr<T>(invstd), ptr<T>(gx),
                                                   ptr<T>(gg), ptr<T>(gb));
              },
              PB_CUDA_KERNEL(kernels::layernorm_backward_cuda(
                  stream_for(x.device()), M, D, ptr<float>(x), ptr<float>(gy), ptr<float>(gamma),
                  ptr<float>(mean), ptr<float>(invstd), ptr<float>(gx), ptr<float>(gg),
                  ptr<float>(gb))));
          return std::vector<Tensor>{gx, gg, gb};
        });
  }
  return y;
}

}  // namespace pb::ops
