#pragma once
// Optimizers, created by name from config, updating every parameter in one fused pass.
//
//   OptimizerConfig config{"adam", {{"learning_rate", 1e-3}, {"weight_decay", 1e-4}}};
//   config.no_decay_patterns = {"*.bias"};
//   std::unique_ptr<Optimizer> opt = make_optimizer(config, model.named_parameters());
//   fmt::print("{}\n", opt->to_json().dump());   // resolved hyperparameters
//   ... loss.backward(); opt->step(schedule(opt->step_count())); ...
//
// The learning rate is an argument of every update (llm.c's update(..., lr, ...)): the schedule
// is a pure function of the step and the optimizer stores no learning rate of its own beyond the
// configured base value reported in hyperparameters().
//
// The update rules are the Deep Learning Tuning Playbook's, exactly as it writes them; the formulas
// (with AdamW, LARS and LAMB) are in kernels/optim.h. One step is one call of the multi-tensor
// kernel over all parameters that have a gradient: one CUDA launch (two for lars/lamb: per-tensor
// norms, then the update), no host synchronisation.
//
// The registry (optimizer_registry()) lists every optimizer with its hyperparameters as
// config::KeySpecs (name, type, default, range, aliases, doc): the training config's [optimizer]
// section is built from them, so each default is written once. make_optimizer rejects unknown
// names and unknown, missing or out-of-range hyperparameters with a ConfigError naming them
// ("did you mean ...?" for near misses, "lr" accepted for "learning_rate").
//
// Optimizers and their hyperparameters (every optimizer also takes `weight_decay`, default 0
// except adamw/lamb 0.01, and `no_decay_1d`):
//   sgd       learning_rate
//   momentum  learning_rate, momentum (gamma, 0.9)
//   nesterov  learning_rate, momentum (gamma, 0.9)
//   rmsprop   learning_rate, rho (0.9), momentum (gamma, 0), epsilon (1e-8, inside the sqrt)
//   adam      learning_rate, beta1 (0.9), beta2 (0.999), epsilon (1e-8)
//   nadam     learning_rate, beta1 (0.9), beta2 (0.999), epsilon (1e-8)
//   adamw     learning_rate, beta1 (0.9), beta2 (0.999), epsilon (1e-8); weight_decay decoupled
//   lars      learning_rate, momentum (0.9), trust_coefficient (0.001), epsilon (0)
//   lamb      learning_rate, beta1 (0.9), beta2 (0.999), epsilon (1e-6); weight_decay decoupled
// learning_rate is required. weight_decay is the coupled L2 term (g <- g + wd theta before the
// rule) for every rule except adamw and lamb, whose decay is decoupled as in their papers.
//
// Excluding parameters from weight decay (biases and batch-norm scales/shifts, usually):
// `no_decay_1d` = 1 excludes every parameter with at most one dimension; no_decay_patterns
// excludes parameters whose dotted name matches a glob ('*' any run of characters, '?' one
// character): {"*.bias", "*bn*"}. to_json() lists the excluded parameters, so a pattern that
// matches nothing shows. For lars/lamb, excluded parameters also skip the trust ratio (tau = 1),
// as in the MLPerf LARS reference.
//
// State. step_count() updates have been applied; the slots are per-parameter tensors on the
// parameters' device. state_dict() returns copies named "state.step" (a float64 scalar holding
// the step count) and "state.<parameter>.<slot>" (slot names in optimizer_registry(): e.g.
// "state.layer1.0.conv1.weight.exp_avg"); load_state_dict() restores them exactly, so a run
// resumed from a checkpoint continues bit for bit.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/optim.h"
#include "runtime/config/config.h"
#include "runtime/core/tensor.h"
#include "runtime/nn/module.h"

namespace pb::optim {

using nn::NamedTensor;

// True when `name` matches the glob `pattern` ('*' any run, '?' one character).
bool glob_match(std::string_view pattern, std::string_view name);

// ---- the registry
// --------------------------------------------------------------------------------

struct OptimizerInfo {
  std::string name;  // "adam"
  kernels::OptimRule rule;
  std::string description;
  std::vector<config::KeySpec> hyperparameters;  // bare names: "learning_rate", "beta1", ...
  std::vector<std::string> slots;                // state names per parameter, in kernel slot order
};

// Every optimizer, in kernels::OptimRule order.
const std::vector<OptimizerInfo>& optimizer_registry();
std::vector<std::string> optimizer_names();
// Throws ValueError naming the unknown optimizer and the known ones.
const OptimizerInfo& optimizer_info(std::string_view name);

struct OptimizerConfig {
  std::string name;                               // a registry name: "sgd", "adam", ...
  std::map<std::string, double> hyperparameters;  // "learning_rate" -> 0.1, ...
  std::vector<std::string> no_decay_patterns;     // globs on parameter names
};

class Optimizer {
 public:
  // `params`: the named parameters to update (model.named_parameters()), all on one device with
  // one floating dtype (float32 on CUDA). Slots are created here (zero; rmsprop's v starts at 1).
  Optimizer(const OptimizerConfig& config, std::vector<NamedTensor> params);

  const std::string& name() const { return info_->name; }
  kernels::OptimRule rule() const { return info_->rule; }
  // The resolved hyperparameters (learning_rate is the configured base value; the rate of each
  // update is the argument of step()).
  const std::map<std::string, double>& hyperparameters() const { return hyperparameters_; }
  double hyperparameter(std::string_view name) const;
  // {"name": "adam", "hyperparameters": {...}, "no_decay_patterns": [...],
  //  "no_decay_parameters": [...], "step": <count>}
  nlohmann::json to_json() const;

  // Updates applied so far (the t of the next update is step_count() + 1).
  int64_t step_count() const { return step_; }

  const std::vector<NamedTensor>& parameters() const { return params_; }
  // Whether parameter i gets weight decay (and, for lars/lamb, the trust ratio).
  bool decays(std::size_t i) const { return decays_[i]; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }

  // One update with learning rate `lr` (finite, >= 0) of every parameter that has a gradient
  // (others are skipped and keep their state). grad_scale: optional one-element tensor of the
  // parameters' dtype and device multiplying every gradient before the rule (the clip factor,
  // read on the device: no host sync).
  void step(double lr, const Tensor& grad_scale = Tensor{});
  // The same step, but the amount D each parameter would move by (theta <- theta - D) is written
  // to updates[i] (shaped like parameter i) and the parameters are not changed; the slots and the
  // step count advance. apply_updates then does theta <- theta - scale * D (update clipping).
  void compute_updates(const std::vector<Tensor>& updates, double lr,
                       const Tensor& grad_scale = Tensor{});
  void apply_updates(const std::vector<Tensor>& updates, const Tensor& scale);
  // Drops every parameter's gradient.
  void zero_grad();

  std::vector<NamedTensor> state_dict() const;
  // Restores step and slots from state_dict() output (names, shapes and dtypes must match;
  // tensors may be on any device). Throws ValueError naming missing or unexpected entries.
  void load_state_dict(const std::vector<NamedTensor>& state);

 private:
  void run(const std::vector<Tensor>* updates, double lr, const Tensor& grad_scale);
  void check_scalar(const char* what, const Tensor& t) const;

  const OptimizerInfo* info_;
  std::map<std::string, double> hyperparameters_;
  std::vector<std::string> no_decay_patterns_;
  std::vector<NamedTensor> params_;
  std::vector<bool> decays_;
  std::vector<std::vector<Tensor>> slots_;  // [param][slot]
  Device device_;
  DType dtype_ = DType::F32;
  int64_t step_ = 0;
  Tensor workspace_;  // CUDA lars/lamb: per-chunk partials and per-tensor norms (kept zeroed)
};

// The registry's factory: validates `config` (name, hyperparameters, patterns) and builds the
// optimizer over `params`.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config,
                                          std::vector<NamedTensor> params);

}  // namespace pb::optim
