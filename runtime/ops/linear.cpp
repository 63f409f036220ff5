// matmul and linear: GEMMs through kernels/gemm.h and kernels/linear.h.
#include "kernels/linear.h"
#include "kernels/gemm.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;
using kernels::Trans;

namespace {

// C(M,N) = op(A) op(B) with A, B, C contiguous.
Tensor gemm(OpKind op, Trans ta, Trans tb, const Tensor& a, const Tensor& b, int64_t M, int64_t N,
            int64_t K) {
  Tensor c = empty(Shape{M, N}, TensorOptions{}.with_dtype(a.dtype()).with_device(a.device()));
  const int64_t lda = ta == Trans::No ? K : M;
  const int64_t ldb = tb == Trans::No ? N : K;
  dispatch(
      op, a,
      [&]<typename T>() {
        kernels::gemm_cpu<T>(ta, tb, M, N, K, T(1), ptr<T>(a), lda, ptr<T>(b), ldb, T(0), ptr<T>(c),
                             N);
      },
      PB_CUDA_KERNEL(kernels::gemm_cuda(stream_for(a.device()), ta, tb, M, N, K, 1.0f,
                                        ptr<float>(a), lda, ptr<float>(b), ldb, 0.0f, ptr<float>(c),
                                        N)));
  return c;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_inputs(OpKind::Matmul, {{"a", &a}, {"b", &b}});
  check_ndim(OpKind::Matmul, "a", a, 2);
  check_ndim(OpKind::Matmul, "b", b, 2);
  if (a.dim(1) != b.dim(0)) {
    op_fail(OpKind::Matmul, "inner dimensions differ: a {} and b {}", a.shape().str(),
            b.shape().str());
  }
  const int64_t M = a.dim(0), K = a.dim(1), N = b.dim(1);
  Tensor c = gemm(OpKind::Matmul, Trans::No, Trans::No, a, b, M, N, K);
  if (autograd::needs_grad({&a, &b})) {
    autograd::record(OpKind::Matmul, {a, b}, c, [a, b, M, N, K](const Tensor& gc) {
      Tensor ga, gb;
      if (a.requires_grad()) ga = gemm(OpKind::Matmul, Trans::No, Trans::Yes, gc, b, M, K, N);
      if (b.requires_grad()) gb = gemm(OpKind::Matmul, Trans::Yes, Trans::No, a, gc, K, N, M);
      return std::vector<Tensor>{ga, gb};
    });
  }
  return c;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_inputs(OpKind::Linear, {{"x", &x}, {"weight", &w}}, {{"bias", &b}});
  check_ndim(OpKind::Linear, "x", x, 2);
  check_ndim(OpKind::Linear, "weight", w, 2);
  if (x.dim(1) != w.dim(1)) {
    op_fail(OpKind::Linear, "input {} has {} features, weight {} expects {}", x.shape().str(),
            x.dim(1), w.shape().str(), w.dim(1));
  }
  const int64_t M = x.dim(0), N = w.dim(0), K = w.dim(1);
  check_vector(OpKind::Linear, "bias", b, N);
  Tensor y = empty(Shape{M, N}, TensorOptions{}.with_dtype(x.dtype()).with_device(x.device()));
  dispatch(
      OpKind::Linear, x,
      [&]<typename T>() {
        kernels::linear_forward_cpu<T>(M, N, K, ptr<T>(x), ptr<T>(w), ptr<T>(b), ptr<T>(y));
      },
      PB_CUDA_KERNEL(kernels::linear_forward_cuda(stream_for(x.device()), M, N, K, ptr<float>(x),
                                                  ptr<float>(w), ptr<float>(b), ptr<float>(y))));
  if (autograd::needs_grad({&x, &w, &b})) {
    autograd::record(OpKind::Linear, {x, w, b}, y, [x, w, b, M, N, K](const Tensor& gy) {
      Tensor gx = x.requires_grad() ? empty_like(x) : Tensor{};
      Tensor gw = w.requires_grad() ? empty_like(w) : Tensor{};
      Tensor gb = b.defined() && b.requires_grad() ? empty_like(b) : Tensor{};
      dispatch(
          OpKind::Linear, x,
          [&]<typename T>() {
            kernels::linear_backward_cpu<T>(M, N, K, ptr<T>(x), ptr<T>(w), ptr<T>(gy), ptr<T>(gx),
                                            ptr<T>(gw), ptr<T>(gb));
          },
          PB_CUDA_KERNEL(kernels::linear_backward_cuda(
              stream_for(x.device()), M, N, K, ptr<float>(x), ptr<float>(w), ptr<float>(gy),
              ptr<float>(gx), ptr<float>(gw), ptr<float>(gb))));
      return std::vector<Tensor>{gx, gw, gb};
    });
  }
  return y;
}

}  // namespace pb::ops
