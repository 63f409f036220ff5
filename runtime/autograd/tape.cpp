#include "runtime/autograd/tape.h"

#include <memory>
#include <unordered_map>

#include "runtime/core/module_scope.h"
#include "runtime/ops/ops.h"

namespace pb::autograd {
namespace {

thread_local bool t_grad_enabled = true;
thread_local std::vector<Node> t_tape;

// Releases the tape whichever way backward() leaves.
struct TapeRelease {
  ~TapeRelease() { clear_tape(); }
};

}  // namespace

bool grad_enabled() {
  return t_grad_enabled;
}

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) {
  t_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  t_grad_enabled = previous_;
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs) {
    if (t && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

void record(OpKind op, std::vector<Tensor> inputs, const Tensor& output, BackwardFn backward) {
  output.impl()->requires_grad = true;
  output.impl()->is_leaf = false;
  t_tape.push_back(
      Node{op, current_module_path(), std::move(inputs), output.id(), std::move(backward)});
}

void clear_tape() {
  std::vector<Node>().swap(t_tape);
}

std::size_t tape_size() {
  return t_tape.size();
}

void backward(const Tensor& root) {
  if (!root.defined()) fail("backward: called on an undefined tensor");
  if (root.numel() != 1) {
    fail("backward: the root must be a scalar (one element), got shape {}", root.shape().str());
  }
  backward(root,
           ones(root.shape(), TensorOptions{}.with_dtype(root.dtype()).with_device(root.device())));
}

void backward(const Tensor& root, const Tensor& seed) {
  if (!root.defined() || !seed.defined()) fail("backward: called on an undefined tensor");
  if (seed.shape() != root.shape() || seed.dtype() != root.dtype() ||
      seed.device() != root.device()) {
    fail("backward: seed gradient {} {} on {} does not match root {} {} on {}", seed.shape().str(),
         dtype_name(seed.dtype()), seed.device().str(), root.shape().str(),
         dtype_name(root.dtype()), root.device().str());
  }
  if (!root.requires_grad()) {
    fail(
        "backward: the root does not require grad (no recorded op produced it from a tensor "
        "with requires_grad)");
  }
  TapeRelease release;
  NoGradGuard no_grad;  // backward formulas are not themselves recorded

  std::unordered_map<uint64_t, Tensor> pending;  // gradients of op outputs, by tensor id
  auto accumulate = [&](const Tensor& input, const Tensor& g) {
    if (!input.defined() || !input.requires_grad() || !g.defined()) return;
    if (g.shape() != input.shape()) {
      fail("backward: gradient of shape {} for an input of shape {}", g.shape().str(),
           input.shape().str());
    }
    if (input.is_leaf()) {
      Tensor existing = input.grad();
      if (existing.defined()) {
        ops::add_(existing, g);
      } else {
        input.set_grad(g.clone());
      }
      return;
    }
    auto [it, inserted] = pending.try_emplace(input.id(), g);
    if (!inserted) it->second = ops::add(it->second, g);
  };

  if (root.is_leaf()) {
    accumulate(root, seed);
    return;
  }
  pending.emplace(root.id(), seed);
  for (auto node = t_tape.rbegin(); node != t_tape.rend(); ++node) {
    auto it = pending.find(node->output_id);
    if (it == pending.end()) continue;
    const Tensor grad_output = std::move(it->second);
    pending.erase(it);
    ModuleScope scope(node->where);
    std::vector<Tensor> grads = node->backward(grad_output);
    if (grads.size() != node->inputs.size()) {
      fail("backward of {}: returned {} gradients for {} inputs", op_schema(node->op).name,
           grads.size(), node->inputs.size());
    }
    for (std::size_t i = 0; i < grads.size(); ++i) accumulate(node->inputs[i], grads[i]);
  }
}

}  // namespace pb::autograd

namespace pb {

// Tensor's autograd entry point lives with the tape (runtime/core declares it, the layer above
// defines it, so the core library does not link upward).
void Tensor::backward() const {
  autograd::backward(*this);
}

}  // namespace pb
