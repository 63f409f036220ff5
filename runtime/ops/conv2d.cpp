// conv2d: x:(N,C,H,W) * w:(K,C,R,S) (+ b:(K)) -> (N,K,P,Q), kernels/conv2d.h.
#include "kernels/conv2d.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  constexpr OpKind op = OpKind::Conv2d;
  check_inputs(op, {{"input", &x}, {"weight", &w}}, {{"bias", &b}});
  check_ndim(op, "input", x, 4);
  check_ndim(op, "weight", w, 4);
  if (x.dim(1) != w.dim(1)) {
    op_fail(op, "input {} has {} channels, weight {} expects {}", x.shape().str(), x.dim(1),
            w.shape().str(), w.dim(1));
  }
  if (o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 || o.pad_w < 0) {
    op_value_fail(op, "stride ({}, {}) must be >= 1 and padding ({}, {}) >= 0", o.stride_h,
                  o.stride_w, o.pad_h, o.pad_w);
  }
  const kernels::Conv2dShape s{x.dim(0), x.dim(1),   x.dim(2),   x.dim(3), w.dim(0), w.dim(2),
                               w.dim(3), o.stride_h, o.stride_w, o.pad_h,  o.pad_w};
  if (s.H + 2 * s.pad_h < s.R || s.W + 2 * s.pad_w < s.S) {
    op_fail(op, "input {} with padding ({}, {}) is smaller than the {}x{} kernel of weight {}",
            x.shape().str(), s.pad_h, s.pad_w, s.R, s.S, w.shape().str());
  }
  check_vector(op, "bias", b, s.K);
  Tensor y = empty(Shape{s.N, s.K, s.P(), s.Q()},
                   TensorOptions{}.with_dtype(x.dtype()).with_device(x.device()));
  dispatch(
      op, x,
      [&]<typename T>() {
        kernels::conv2d_forward_cpu<T>(s, ptr<T>(x), ptr<T>(w), ptr<T>(b), ptr<T>(y));
      },
      PB_CUDA_KERNEL(kernels::conv2d_forward_cuda(stream_for(x.device()), s, ptr<float>(x),
                                                  ptr<float>(w), ptr<float>(b), ptr<float>(y))));
  if (autograd::needs_grad({&x, &w, &b})) {
    autograd::record(op, {x, w, b}, y, [x, w, b, s](const Tensor& gy) {
      Tensor gx = x.requires_grad() ? empty_like(x) : Tensor{};
      const bool weight_grads = w.requires_grad() || (b.defined() && b.requires_grad());
      Tensor gw = weight_grads ? empty_like(w) : Tensor{};
      Tensor gb = b.defined() && b.requires_grad() ? empty_like(b) : Tensor{};
      dispatch(
          OpKind::Conv2d, x,
          [&]<typename T>() {
            if (gx.defined()) {
              kernels::conv2d_backward_data_cpu<T>(s, ptr<T>(gy), ptr<T>(w), ptr<T>(gx));
            }
            if (gw.defined()) {
              kernels::conv2d_backward_weight_cpu<T>(s, ptr<T>(x), ptr<T>(gy), ptr<T>(gw),
                                                     ptr<T>(gb));
            }
          },
          PB_CUDA_KERNEL(
              const cudaStream_t stream = stream_for(x.device()); if (gx.defined()) {
                kernels::conv2d_backward_data_cuda(stream, s, ptr<float>(gy), ptr<float>(w),
                                                   ptr<float>(gx));
              } if (gw.defined()) {
                // Split-K partial sums; the caching allocator makes this buffer cheap to reuse.
                const int64_t bytes = kernels::conv2d_backward_weight_cuda_workspace_bytes(s);
                const Tensor workspace = bytes > 0 ? empty(Shape{(bytes + 3) / 4},
                                                           TensorOptions{}.with_device(x.device()))
                                                   : Tensor{};
                kernels::conv2d_backward_weight_cuda(
                    stream, s, ptr<float>(x), ptr<float>(gy), ptr<float>(gw), ptr<float>(gb),
                    workspace.defined() ? workspace.raw_data() : nullptr);
              }));
      if (!w.requires_grad()) gw = Tensor{};
      return std::vector<Tensor>{gx, gw, gb};
    });
  }
  return y;
}

}  // namespace pb::ops
