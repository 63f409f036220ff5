#pragma once
// Define-by-run autograd on a tape.
//
// Every op whose inputs require gradients appends one Node to the current thread's tape while it
// runs forward; the tape is therefore in execution order, which is a topological order of the
// graph. Tensor::backward() on a scalar seeds its gradient with 1 and walks the tape in reverse:
// each node whose output received a gradient turns it into gradients for its inputs; gradients
// for op outputs live in a map keyed by tensor id until consumed, gradients for leaves
// (parameters, inputs created with requires_grad) are accumulated into leaf.grad(). When the walk
// ends, or throws, the tape is released with everything it kept alive. One backward consumes the
// whole tape: ops recorded but not on the path to the loss are dropped with it.
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"
#include "runtime/ops/op_table.h"

namespace pb::autograd {

// Gradients of a node's inputs given the gradient of its output. An undefined Tensor means
// "no gradient" for that input.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  OpKind op;
  std::string where;  // module path when recorded, for error messages
  std::vector<Tensor> inputs;
  uint64_t output_id = 0;
  BackwardFn backward;
};

bool grad_enabled();

// Disables recording in a scope (evaluation, optimizer updates, metrics).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any of the inputs requires a gradient: the op must record.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Marks `output` as produced by `op` from `inputs` and appends the node to the tape.
void record(OpKind op, std::vector<Tensor> inputs, const Tensor& output, BackwardFn backward);

// Backpropagates from `root`, a one-element tensor (gradient 1), then releases the tape.
void backward(const Tensor& root);
// Backpropagates from any `root` whose gradient is `seed` (same shape, dtype and device): the
// vector-Jacobian product seed^T dRoot/dLeaves.
void backward(const Tensor& root, const Tensor& seed);

// Drops the tape without backpropagating (e.g. after a forward pass whose loss is not needed).
void clear_tape();
std::size_t tape_size();

}  // namespace pb::autograd
