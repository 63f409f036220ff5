// Elementwise ops: relu, gelu, add, scale, dropout (and the unrecorded in-place add_).
#include "kernels/elementwise.h"
#include <algorithm>
#include "kernels/dropout.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;

Tensor relu(const Tensor& x) {
  check_inputs(OpKind::Relu, {{"x", &x}});
  Tensor y = empty_like(x);
  const int64_t n = x.numel();
  dispatch(
      OpKind::Relu, x, [&]<typename T>() { kernels::relu_forward_cpu<T>(n, ptr<T>(x), ptr<T>(y)); },
      PB_CUDA_KERNEL(
          kernels::relu_forward_cuda(stream_for(x.device()), n, ptr<float>(x), ptr<float>(y))));
  if (autograd::needs_grad({&x})) {
    autograd::record(OpKind::Relu, {x}, y, [x, n](const Tensor& gy) {
      Tensor gx = empty_like(x);
      dispatch(
          OpKind::Relu, x,
          [&]<typename T>() {
            kernels::relu_backward_cpu<T>(n, ptr<T>(x), ptr<T>(gy), ptr<T>(gx));
          },
          PB_CUDA_KERNEL(kernels::relu_backward_cuda(stream_for(x.device()), n, ptr<float>(x),
                                                     ptr<float>(gy), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor gelu(const Tensor& x) {
  check_inputs(OpKind::Gelu, {{"x", &x}});
  Tensor y = empty_like(x);
  const int64_t n = x.numel();
  dispatch(
      OpKind::Gelu, x, [&]<typename T>() { kernels::gelu_forward_cpu<T>(n, ptr<T>(x), ptr<T>(y)); },
      PB_CUDA_KERNEL(
          kernels::gelu_forward_cuda(stream_for(x.device()), n, ptr<float>(x), ptr<float>(y))));
  if (autograd::needs_grad({&x})) {
    autograd::record(OpKind::Gelu, {x}, y, [x, n](const Tensor& gy) {
      Tensor gx = empty_like(x);
      dispatch(
          OpKind::Gelu, x,
          [&]<typename T>() {
            kernels::gelu_backward_cpu<T>(n, ptr<T>(x), ptr<T>(gy), ptr<T>(gx));
          },
          PB_CUDA_KERNEL(kernels::gelu_backward_cuda(stream_for(x.device()), n, ptr<float>(x),
                                                     ptr<float>(gy), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

namespace {

void check_same_shape(OpKind op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) {
    op_fail(op, "shapes {} and {} differ (no broadcasting)", a.shape().str(), b.shape().str());
  }
}

void add_into(const Tensor& a, const Tensor& b, const Tensor& y) {
  const int64_t n = a.numel();
  dispatch(
      OpKind::Add, a,
      [&]<typename T>() { kernels::add_cpu<T>(n, ptr<T>(a), ptr<T>(b), ptr<T>(y)); },
      PB_CUDA_KERNEL(kernels::add_cuda(stream_for(a.device()), n, ptr<float>(a), ptr<float>(b),
                                       ptr<float>(y))));
}

void scale_into(const Tensor& x, double alpha, const Tensor& y) {
  const int64_t n = x.numel();
  dispatch(
      OpKind::Scale, x,
      [&]<typename T>() { kernels::scale_cpu<T>(n, static_cast<T>(alpha), ptr<T>(x), ptr<T>(y)); },
      PB_CUDA_KERNEL(kernels::scale_cuda(stream_for(x.device()), n, static_cast<float>(alpha),
                                         ptr<float>(x), ptr<float>(y))));
}

}  // namespace

Tensor add_relu(const Tensor& a, const Tensor& b) {
  check_inputs(OpKind::AddRelu, {{"a", &a}, {"b", &b}});
  check_same_shape(OpKind::AddRelu, a, b);
  Tensor y = empty_like(a);
  const int64_t n = a.numel();
  dispatch(
      OpKind::AddRelu, a,
      [&]<typename T>() { kernels::add_relu_cpu<T>(n, ptr<T>(a), ptr<T>(b), ptr<T>(y)); },
      PB_CUDA_KERNEL(kernels::add_relu_cuda(stream_for(a.device()), n, ptr<float>(a), ptr<float>(b),
                                            ptr<float>(y))));
  if (autograd::needs_grad({&a, &b})) {
    // relu(a + b) > 0 exactly where a + b > 0: the output masks the gradient of both inputs.
    autograd::record(OpKind::AddRelu, {a, b}, y, [y, n](const Tensor& gy) {
      Tensor g = empty_like(gy);
      dispatch(
          OpKind::AddRelu, y,
          [&]<typename T>() {
            kernels::add_relu_backward_cpu<T>(n, ptr<T>(y), ptr<T>(gy), ptr<T>(g));
          },
          PB_CUDA_KERNEL(kernels::add_relu_backward_cuda(stream_for(y.device()), n, ptr<float>(y),
                                                         ptr<float>(gy), ptr<float>(g))));
      return std::vector<Tensor>{g, g};
    });
  }
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  check_inputs(OpKind::Add, {{"a", &a}, {"b", &b}});
  check_same_shape(OpKind::Add, a, b);
  Tensor y = empty_like(a);
  add_into(a, b, y);
  if (autograd::needs_grad({&a, &b})) {
    autograd::record(OpKind::Add, {a, b}, y, [](const Tensor& gy) {
      return std::vector<Tensor>{gy, gy};
    });
  }
  return y;
}

void add_(const Tensor& a, const Tensor& b, double alpha) {
  check_inputs(OpKind::Add, {{"a", &a}, {"b", &b}});
  check_same_shape(OpKind::Add, a, b);
  if (alpha == 1.0) {
    add_into(a, b, a);
    return;
  }
  const int64_t n = a.numel();
  dispatch(
      OpKind::Add, a,
      [&]<typename T>() { kernels::axpy_cpu<T>(n, static_cast<T>(alpha), ptr<T>(b), ptr<T>(a)); },
      PB_CUDA_KERNEL(kernels::axpy_cuda(stream_for(a.device()), n, static_cast<float>(alpha),
                                        ptr<float>(b), ptr<float>(a))));
}

Tensor scale(const Tensor& x, double alpha) {
  check_inputs(OpKind::Scale, {{"x", &x}});
  Tensor y = empty_like(x);
  scale_into(x, alpha, y);
  if (autograd::needs_grad({&x})) {
    autograd::record(OpKind::Scale, {x}, y, [alpha](const Tensor& gy) {
      Tensor gx = empty_like(gy);
      scale_into(gy, alpha, gx);
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_inputs(OpKind::Dropout, {{"x", &x}});
  if (!(p >= 0.0 && p < 1.0)) op_value_fail(OpKind::Dropout, "p must be in [0, 1), got {}", p);
  if (!training || p == 0.0) return x;
  const int64_t n = x.numel();
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(n));
  const float pf = static_cast<float>(p);
  Tensor y = empty_like(x);
  dispatch(
      OpKind::Dropout, x,
      [&]<typename T>() {
        kernels::dropout_forward_cpu<T>(n, pf, seed, offset, ptr<T>(x), ptr<T>(y));
      },
      PB_CUDA_KERNEL(kernels::dropout_forward_cuda(stream_for(x.device()), n, pf, seed, offset,
                                                   ptr<float>(x), ptr<float>(y))));
  if (autograd::needs_grad({&x})) {
    autograd::record(OpKind::Dropout, {x}, y, [pf, seed, offset, n](const Tensor& gy) {
      Tensor gx = empty_like(gy);
      dispatch(
          OpKind::Dropout, gy,
          [&]<typename T>() {
            kernels::dropout_backward_cpu<T>(n, pf, seed, offset, ptr<T>(gy), ptr<T>(gx));
          },
          PB_CUDA_KERNEL(kernels::dropout_backward_cuda(stream_for(gy.device()), n, pf, seed,
                                                        offset, ptr<float>(gy), ptr<float>(gx))));
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor reshape(const Tensor& x, std::vector<int64_t> dims) {
  if (!x.defined()) op_fail(OpKind::Reshape, "x is undefined");
  // Resolve one -1 dimension.
  int infer = -1;
  int64_t known = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (infer >= 0) op_fail(OpKind::Reshape, "more than one -1 in target shape");
      infer = static_cast<int>(i);
    } else if (dims[i] < 0) {
      op_fail(OpKind::Reshape, "invalid target dimension {}", dims[i]);
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0) {
      op_fail(OpKind::Reshape, "cannot infer -1: {} elements of {} do not divide into {}",
              x.numel(), x.shape().str(), known);
    }
    dims[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  const Shape target = Shape(std::span<const int64_t>(dims.data(), dims.size()));
  if (target.numel() != x.numel()) {
    op_fail(OpKind::Reshape, "cannot view {} ({} elements) as {} ({} elements)", x.shape().str(),
            x.numel(), target.str(), target.numel());
  }
  Tensor y = x.detach();
  y.impl()->shape = target;
  if (autograd::needs_grad({&x})) {
    const Shape original = x.shape();
    autograd::record(OpKind::Reshape, {x}, y, [original](const Tensor& gy) {
      Tensor gx = gy.detach();
      gx.impl()->shape = original;
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace pb::ops

namespace pb {

// Tensor's view methods are ops (they record on the tape), so they are defined in the ops layer:
// runtime/core declares them and does not link upward.
Tensor Tensor::reshape(std::vector<int64_t> dims) const {
  return ops::reshape(*this, std::move(dims));
}

Tensor Tensor::flatten(int start_dim) const {
  const Shape& s = shape();
  if (start_dim < 0 || start_dim >= std::max(1, s.ndim())) {
    fail<ShapeError>("flatten: start_dim {} out of range for shape {}", start_dim, s.str());
  }
  std::vector<int64_t> dims(s.dims().begin(), s.dims().begin() + start_dim);
  int64_t rest = 1;
  for (int i = start_dim; i < s.ndim(); ++i) rest *= s[i];
  dims.push_back(rest);
  return reshape(std::move(dims));
}

}  // namespace pb
