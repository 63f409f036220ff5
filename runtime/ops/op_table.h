#pragma once
// The op table: every op the runtime can record, declared once.
//
// Each op lives in one file under runtime/ops/ that holds its shape rule (input checks that throw
// ShapeError naming the op, the module and the shapes), its CPU kernel dispatch (float and
// double), its CUDA kernel slot and its backward formula. This table pins the names and the
// facts the universal op test needs; adding an OpKind without a table row fails to compile
// (static_assert below), and tests/gradcheck has a matching static_assert over its cases, so an
// op cannot land without its gradient check.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pb {

enum class OpKind : uint8_t {
  Matmul,
  Linear,
  Conv2d,
  BatchNorm,
  LayerNorm,
  Relu,
  Gelu,
  Add,
  AddRelu,
  Scale,
  MaxPool2d,
  AvgPool2d,
  GlobalAvgPool,
  Reshape,
  Dropout,
  SoftmaxCrossEntropy,
  MseLoss,
  TopkErrors,
  kCount
};

inline constexpr std::size_t kOpCount = static_cast<std::size_t>(OpKind::kCount);

struct OpSchema {
  OpKind kind;
  std::string_view name;
  std::string_view signature;  // inputs and output with their shapes
  bool differentiable;         // has a backward formula (metrics do not)
  bool cuda_kernel;            // the CUDA kernel slot is filled in this build's sources
};

// clang-format off
inline constexpr std::array<OpSchema, kOpCount> kOpSchemas = {{
  {OpKind::Matmul,    "matmul",     "a:(M,K), b:(K,N) -> (M,N)",                              true, true},
  {OpKind::Linear,    "linear",     "x:(M,K), w:(N,K), b:(N)? -> (M,N)",                      true, true},
  {OpKind::Conv2d,    "conv2d",     "x:(N,C,H,W), w:(K,C,R,S), b:(K)? -> (N,K,P,Q)",          true, true},
  {OpKind::BatchNorm, "batch_norm", "x:(N,C) or (N,C,H,W), gamma:(C)?, beta:(C)? [, relu] -> like x", true, true},
  {OpKind::LayerNorm, "layer_norm", "x:(...,D), gamma:(D)?, beta:(D)? -> like x",             true, true},
  {OpKind::Relu,      "relu",       "x -> like x",                                            true, true},
  {OpKind::Gelu,      "gelu",       "x -> like x",                                            true, true},
  {OpKind::Add,       "add",        "a, b (same shape) -> like a",                            true, true},
  {OpKind::AddRelu,   "add_relu",   "a, b (same shape) -> relu(a + b)",                       true, true},
  {OpKind::Scale,     "scale",      "x, alpha -> like x",                                     true, true},
  {OpKind::MaxPool2d, "max_pool2d", "x:(N,C,H,W) -> (N,C,P,Q)",                               true, true},
  {OpKind::AvgPool2d, "avg_pool2d", "x:(N,C,H,W) -> (N,C,P,Q)",                               true, true},
  {OpKind::GlobalAvgPool, "global_avg_pool", "x:(N,C,H,W) -> (N,C)",                          true, true},
  {OpKind::Reshape,   "reshape",    "x -> same elements, new shape",                          true, true},
  {OpKind::Dropout,   "dropout",    "x, p, (seed, offset) -> like x",                         true, true},
  {OpKind::SoftmaxCrossEntropy, "softmax_cross_entropy",
                                    "logits:(N,K), labels:(N) int32, weights:(N)? -> ()",      true, true},
  {OpKind::MseLoss,   "mse_loss",   "pred, target (same shape) -> ()",                        true, true},
  {OpKind::TopkErrors, "topk_errors", "logits:(N,K), labels:(N) int32, weights:(N)? -> (2)",  false, true},
}};
// clang-format on

namespace detail {
constexpr bool op_table_in_order() {
  for (std::size_t i = 0; i < kOpCount; ++i) {
    if (static_cast<std::size_t>(kOpSchemas[i].kind) != i) return false;
  }
  return true;
}
}  // namespace detail
static_assert(detail::op_table_in_order(),
              "kOpSchemas rows must be in OpKind order: add the new op's row where its enum is");

constexpr const OpSchema& op_schema(OpKind op) {
  return kOpSchemas[static_cast<std::size_t>(op)];
}

// "conv2d (layer1.0.conv1)" or "conv2d" outside any module: the prefix of every op error.
std::string op_where(OpKind op);

}  // namespace pb
