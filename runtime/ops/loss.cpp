// Losses and metrics: softmax_cross_entropy, mse_loss, topk_errors (kernels/loss.h, metrics.h).
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "runtime/autograd/tape.h"
#include "runtime/ops/dispatch.h"
#include "runtime/ops/ops.h"

namespace pb::ops {
using namespace detail;

namespace {

Tensor scalar_like(const Tensor& x) {
  return empty(Shape{}, TensorOptions{}.with_dtype(x.dtype()).with_device(x.device()));
}

// (N,K) logits, (N) labels and optional (N) weights, checked together.
void check_classification(OpKind op, const Tensor& logits, const Tensor& labels,
                          const Tensor& weights) {
  check_inputs(op, {{"logits", &logits}}, {{"weights", &weights}});
  check_ndim(op, "logits", logits, 2);
  if (logits.dim(1) == 0) op_fail(op, "logits {} have no classes", logits.shape().str());
  check_labels(op, labels, logits.dim(0), logits.dim(1), logits);
  check_vector(op, "weights", weights, logits.dim(0));
}

}  // namespace

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& weights,
                             double label_smoothing) {
  constexpr OpKind op = OpKind::SoftmaxCrossEntropy;
  check_classification(op, logits, labels, weights);
  if (!(label_smoothing >= 0 && label_smoothing <= 1)) {
    op_value_fail(op, "label_smoothing must be in [0, 1], got {}", label_smoothing);
  }
  const int64_t N = logits.dim(0), K = logits.dim(1);
  Tensor loss = scalar_like(logits);
  Tensor probs = empty_like(logits);
  dispatch(
      op, logits,
      [&]<typename T>() {
        kernels::softmax_cross_entropy_forward_cpu<T>(
            N, K, ptr<T>(logits), ptr<int32_t>(labels), ptr<T>(weights),
            static_cast<T>(label_smoothing), ptr<T>(loss), ptr<T>(probs));
      },
      PB_CUDA_KERNEL(kernels::softmax_cross_entropy_forward_cuda(
          stream_for(logits.device()), N, K, ptr<float>(logits), ptr<int32_t>(labels),
          ptr<float>(weights), static_cast<float>(label_smoothing), ptr<float>(loss),
          ptr<float>(probs), reduce_workspace(logits.device()))));
  if (autograd::needs_grad({&logits})) {
    autograd::record(
        op, {logits}, loss, [probs, labels, weights, label_smoothing, N, K](const Tensor& gloss) {
          Tensor glogits = empty_like(probs);
          dispatch(
              OpKind::SoftmaxCrossEntropy, probs,
              [&]<typename T>() {
                kernels::softmax_cross_entropy_backward_cpu<T>(
                    N, K, ptr<T>(probs), ptr<int32_t>(labels), ptr<T>(weights),
                    static_cast<T>(label_smoothing), ptr<T>(gloss), ptr<T>(glogits));
              },
              PB_CUDA_KERNEL(kernels::softmax_cross_entropy_backward_cuda(
                  stream_for(probs.device()), N, K, ptr<float>(probs), ptr<int32_t>(labels),
                  ptr<float>(weights), static_cast<float>(label_smoothing), ptr<float>(gloss),
                  ptr<float>(glogits), reduce_workspace(probs.device()))));
          return std::vector<Tensor>{glogits};
        });
  }
  return loss;
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  constexpr OpKind op = OpKind::MseLoss;
  check_inputs(op, {{"pred", &pred}, {"target", &target}});
  if (pred.shape() != target.shape()) {
    op_fail(op, "pred {} and target {} differ in shape", pred.shape().str(), target.shape().str());
  }
  if (pred.numel() == 0) op_fail(op, "pred {} is empty", pred.shape().str());
  Tensor loss = scalar_like(pred);
  const int64_t n = pred.numel();
  dispatch(
      op, pred,
      [&]<typename T>() {
        kernels::mse_forward_cpu<T>(n, ptr<T>(pred), ptr<T>(target), ptr<T>(loss));
      },
      PB_CUDA_KERNEL(kernels::mse_forward_cuda(stream_for(pred.device()), n, ptr<float>(pred),
                                               ptr<float>(target), ptr<float>(loss),
                                               reduce_workspace(pred.device()))));
  if (autograd::needs_grad({&pred, &target})) {
    autograd::record(op, {pred, target}, loss, [pred, target, n](const Tensor& gloss) {
      Tensor gp = pred.requires_grad() ? empty_like(pred) : Tensor{};
      Tensor gt = target.requires_grad() ? empty_like(target) : Tensor{};
      dispatch(
          OpKind::MseLoss, pred,
          [&]<typename T>() {
            kernels::mse_backward_cpu<T>(n, ptr<T>(pred), ptr<T>(target), ptr<T>(gloss), ptr<T>(gp),
                                         ptr<T>(gt));
          },
          PB_CUDA_KERNEL(kernels::mse_backward_cuda(stream_for(pred.device()), n, ptr<float>(pred),
                                                    ptr<float>(target), ptr<float>(gloss),
                                                    ptr<float>(gp), ptr<float>(gt))));
      return std::vector<Tensor>{gp, gt};
    });
  }
  return loss;
}

Tensor topk_errors(const Tensor& logits, const Tensor& labels, const Tensor& weights, int64_t k) {
  constexpr OpKind op = OpKind::TopkErrors;
  check_classification(op, logits, labels, weights);
  if (k < 1 || k > logits.dim(1)) {
    op_value_fail(op, "k = {} must be in [1, {}] for logits {}", k, logits.dim(1),
                  logits.shape().str());
  }
  Tensor out =
      empty(Shape{2}, TensorOptions{}.with_dtype(logits.dtype()).with_device(logits.device()));
  dispatch(
      op, logits,
      [&]<typename T>() {
        T* o = ptr<T>(out);
        kernels::topk_error_count_cpu<T>(logits.dim(0), logits.dim(1), k, ptr<T>(logits),
                                         ptr<int32_t>(labels), ptr<T>(weights), &o[0], &o[1]);
      },
      PB_CUDA_KERNEL(float* o = ptr<float>(out); kernels::topk_error_count_cuda(
                         stream_for(logits.device()), logits.dim(0), logits.dim(1), k,
                         ptr<float>(logits), ptr<int32_t>(labels), ptr<float>(weights), &o[0],
                         &o[1], reduce_workspace(logits.device()))));
  return out;
}

}  // namespace pb::ops
