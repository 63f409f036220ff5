// Pooling: max_pool2d, avg_pool2d, global_avg_pool over (N,C,H,W), kernels/pool.h.
#include "kernels/pool.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;

namespace {

kernels::Pool2dShape pool_shape(OpKind op, const Tensor& x, const Pool2dOptions& o) {
  check_inputs(op, {{"input", &x}});
  check_ndim(op, "input", x, 4);
  if (o.kernel_h < 1 || o.kernel_w < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 ||
      o.pad_w < 0) {
    op_value_fail(op, "kernel ({}, {}) and stride ({}, {}) must be >= 1, padding ({}, {}) >= 0",
                  o.kernel_h, o.kernel_w, o.stride_h, o.stride_w, o.pad_h, o.pad_w);
  }
  if (2 * o.pad_h > o.kernel_h || 2 * o.pad_w > o.kernel_w) {
    op_value_fail(op, "padding ({}, {}) must be at most half the kernel ({}, {})", o.pad_h, o.pad_w,
                  o.kernel_h, o.kernel_w);
  }
  const kernels::Pool2dShape s{x.dim(0),   x.dim(1),   x.dim(2),   x.dim(3), o.kernel_h,
                               o.kernel_w, o.stride_h, o.stride_w, o.pad_h,  o.pad_w};
  if (s.H + 2 * s.pad_h < s.kh || s.W + 2 * s.pad_w < s.kw) {
    op_fail(op, "input {} with padding ({}, {}) is smaller than the {}x{} window", x.shape().str(),
            s.pad_h, s.pad_w, s.kh, s.kw);
  }
  return s;
}

Tensor pooled_like(const Tensor& x, const kernels::Pool2dShape& s, DType dtype) {
  return empty(Shape{s.N, s.C, s.P(), s.Q()},
               TensorOptions{}.with_dtype(dtype).with_device(x.device()));
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& o) {
  const kernels::Pool2dShape s = pool_shape(OpKind::MaxPool2d, x, o);
  Tensor y = pooled_like(x, s, x.dtype());
  const bool record = autograd::needs_grad({&x});
  Tensor argmax = record ? pooled_like(x, s, DType::I32) : Tensor{};
  dispatch(
      OpKind::MaxPool2d, x,
      [&]<typename T>() {
        kernels::max_pool2d_forward_cpu<T>(s, ptr<T>(x), ptr<T>(y), ptr<int32_t>(argmax));
      },
      PB_CUDA_KERNEL(kernels::max_pool2d_forward_cuda(stream_for(x.device()), s, ptr<float>(x),
                                                      ptr<float>(y), ptr<int32_t>(argmax))));
  if (record) {
    autograd::record(OpKind::MaxPool2d, {x}, y, [x, s, argmax](const Tensor& gy) {
      Tensor gx = empty_like(x);
      dispatch(
          OpKind::MaxPool2d, x,
          [&]<typename T>() {
            kernels::max_pool2d_backward_cpu<T>(s, ptr<T>(gy), ptr<int32_t>(argmax), ptr<T>(gx));
          },
          PB_CUDA_KERNEL(kernels::max_pool2d_backward_cuda(
              stream_for(x.device()), s, ptr<float>(gy), ptr<int32_t>(argmax), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& o) {
  const kernels::Pool2dShape s = pool_shape(OpKind::AvgPool2d, x, o);
  Tensor y = pooled_like(x, s, x.dtype());
  dispatch(
      OpKind::AvgPool2d, x,
      [&]<typename T>() { kernels::avg_pool2d_forward_cpu<T>(s, ptr<T>(x), ptr<T>(y)); },
      PB_CUDA_KERNEL(kernels::avg_pool2d_forward_cuda(stream_for(x.device()), s, ptr<float>(x),
                                                      ptr<float>(y))));
  if (autograd::needs_grad({&x})) {
    autograd::record(OpKind::AvgPool2d, {x}, y, [x, s](const Tensor& gy) {
      Tensor gx = empty_like(x);
      dispatch(
          OpKind::AvgPool2d, x,
          [&]<typename T>() { kernels::avg_pool2d_backward_cpu<T>(s, ptr<T>(gy), ptr<T>(gx)); },
          PB_CUDA_KERNEL(kernels::avg_pool2d_backward_cuda(stream_for(x.device()), s,
                                                           ptr<float>(gy), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  constexpr OpKind op = OpKind::GlobalAvgPool;
  check_inputs(op, {{"input", &x}});
  check_ndim(op, "input", x, 4);
  const int64_t N = x.dim(0), C = x.dim(1), L = x.dim(2) * x.dim(3);
  if (L == 0) op_fail(op, "input {} has an empty spatial extent", x.shape().str());
  Tensor y = empty(Shape{N, C}, TensorOptions{}.with_dtype(x.dtype()).with_device(x.device()));
  dispatch(
      op, x,
      [&]<typename T>() { kernels::global_avg_pool_forward_cpu<T>(N, C, L, ptr<T>(x), ptr<T>(y)); },
      PB_CUDA_KERNEL(kernels::global_avg_pool_forward_cuda(stream_for(x.device()), N, C, L,
                                                           ptr<float>(x), ptr<float>(y))));
  if (autograd::needs_grad({&x})) {
    autograd::record(op, {x}, y, [x, N, C, L](const Tensor& gy) {
      Tensor gx = empty_like(x);
      dispatch(
          OpKind::GlobalAvgPool, x,
          [&]<typename T>() {
            kernels::global_avg_pool_backward_cpu<T>(N, C, L, ptr<T>(gy), ptr<T>(gx));
          },
          PB_CUDA_KERNEL(kernels::global_avg_pool_backward_cuda(stream_for(x.device()), N, C, L,
                                                                ptr<float>(gy), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace pb::ops
