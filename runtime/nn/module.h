#pragma once
// nn::Module: named parameters, buffers and submodules with PyTorch-style dotted names
// (`layer1.0.bn1.running_mean`), train/eval mode, device moves, and a forward that runs inside
// a ModuleScope so op errors name the module ("conv2d (layer1.0.conv1): ...").
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/tensor.h"

namespace pb::nn {

using NamedTensor = std::pair<std::string, Tensor>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Runs forward(x) inside this module's scope.
  Tensor operator()(const Tensor& x);
  virtual Tensor forward(const Tensor& x) = 0;
  // "Conv2d(3, 16, kernel=(3, 3), stride=(1, 1), padding=(1, 1), bias=false)"
  virtual std::string describe() const = 0;

  // Recursive, in registration order, names relative to this module.
  std::vector<NamedTensor> named_parameters() const;
  std::vector<NamedTensor> named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // Parameters and buffers together (what a checkpoint holds).
  std::vector<NamedTensor> state() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves every parameter and buffer to `device` in place: handles held elsewhere (an
  // optimizer's parameter list) stay valid. Gradients are dropped.
  void to(Device device);
  void zero_grad();

  // Calls fn on this module and every descendant, parents first.
  void apply(const std::function<void(Module&)>& fn);
  // Dotted path from the root module ("layer1.0.conv1"); empty for the root.
  const std::string& path() const { return path_; }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  // Indented tree of describe() lines with parameter counts.
  std::string str() const;

 protected:
  // Registers a parameter (requires_grad is switched on) and returns the stored handle.
  Tensor register_parameter(std::string name, Tensor t);
  Tensor register_buffer(std::string name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    attach(name, module);
    return module;
  }

 private:
  void attach(const std::string& name, std::shared_ptr<Module> module);
  void check_name(const std::string& name) const;
  void set_path(const std::string& path);
  void collect(const std::string& prefix, bool parameters, std::vector<NamedTensor>& out) const;
  void write_tree(std::string& out, const std::string& name, int depth) const;

  std::vector<NamedTensor> parameters_;
  std::vector<NamedTensor> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::string path_;
  bool training_ = true;
};

}  // namespace pb::nn
