#include "runtime/nn/module.h"

#include <fmt/format.h>

#include "runtime/core/module_scope.h"

namespace pb::nn {

Tensor Module::operator()(const Tensor& x) {
  ModuleScope scope(path_.empty() ? describe() : path_);
  return forward(x);
}

void Module::check_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos) {
    fail("module {}: invalid member name '{}' (non-empty, no dots)", describe(), name);
  }
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list) {
      if (n == name) return true;
    }
    return false;
  };
  if (taken(parameters_) || taken(buffers_) || taken(children_)) {
    fail("module {}: name '{}' is registered twice", describe(), name);
  }
}

Tensor Module::register_parameter(std::string name, Tensor t) {
  check_name(name);
  if (!t.defined()) fail("module {}: parameter '{}' is undefined", describe(), name);
  t.set_requires_grad(true);
  parameters_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  check_name(name);
  if (!t.defined()) fail("module {}: buffer '{}' is undefined", describe(), name);
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::attach(const std::string& name, std::shared_ptr<Module> module) {
  check_name(name);
  if (!module) fail("module {}: submodule '{}' is null", describe(), name);
  children_.emplace_back(name, module);
  module->set_path(path_.empty() ? name : path_ + "." + name);
}

void Module::set_path(const std::string& path) {
  path_ = path;
  for (auto& [name, child] : children_) child->set_path(path_.empty() ? name : path_ + "." + name);
}

void Module::collect(const std::string& prefix, bool parameters,
                     std::vector<NamedTensor>& out) const {
  for (const auto& [name, t] : parameters ? parameters_ : buffers_)
    out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, out);
}

std::vector<NamedTensor> Module::named_parameters() const {
  std::vector<NamedTensor> out;
  collect("", true, out);
  return out;
}

std::vector<NamedTensor> Module::named_buffers() const {
  std::vector<NamedTensor> out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

std::vector<NamedTensor> Module::state() const {
  std::vector<NamedTensor> out = named_parameters();
  for (auto& b : named_buffers()) out.push_back(std::move(b));
  return out;
}

void Module::train(bool on) {
  apply([on](Module& m) { m.training_ = on; });
}

void Module::to(Device device) {
  for (auto& [_, t] : state()) {
    if (t.device() == device) continue;
    const Tensor moved = t.to(device);
    t.impl()->storage = moved.impl()->storage;
    t.impl()->offset = moved.impl()->offset;
    t.set_grad(Tensor{});
  }
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) p.set_grad(Tensor{});
}

void Module::apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (auto& [_, child] : children_) child->apply(fn);
}

void Module::write_tree(std::string& out, const std::string& name, int depth) const {
  out += std::string(static_cast<std::size_t>(depth) * 2, ' ');
  if (!name.empty()) out += "(" + name + "): ";
  out += describe();
  int64_t own = 0;
  for (const auto& [_, t] : parameters_) own += t.numel();
  if (own) out += fmt::format("  [{} params]", own);
  out += "\n";
  for (const auto& [n, child] : children_) child->write_tree(out, n, depth + 1);
}

std::string Module::str() const {
  std::string out;
  write_tree(out, "", 0);
  out += fmt::format("total: {} parameters\n", num_parameters());
  return out;
}

}  // namespace pb::nn
