#include "runtime/optim/optimizer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <set>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/autograd/tape.h"
#include "runtime/core/error.h"
#include "runtime/device/cuda_device.h"
#include "runtime/optim/pairs.h"
#include "runtime/optim/registry.h"

namespace pb::optim {

// ---- names
// ----------------------------------------------------------------------------------------

bool glob_match(std::string_view pattern, std::string_view name) {
  std::size_t p = 0, n = 0;
  std::size_t star = std::string_view::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// ---- the registry
// --------------------------------------------------------------------------------

namespace {

using config::KeySpec;
using config::make_key;
using config::Type;

KeySpec learning_rate() {
  return make_key("learning_rate", Type::Float, std::nullopt, "base learning rate (eta, alpha)")
      .greater_than(0)
      .alias("lr")
      .alias("eta")
      .alias("alpha");
}
KeySpec unit_interval(std::string name, std::string doc, double def) {
  return make_key(std::move(name), Type::Float, def, std::move(doc)).at_least(0).less_than(1);
}
KeySpec momentum(double def) {
  return unit_interval("momentum", "gamma", def).alias("gamma").alias("mu");
}
KeySpec epsilon(double def, std::string doc) {
  return make_key("epsilon", Type::Float, def, std::move(doc)).at_least(0).alias("eps");
}

// Appends the weight-decay hyperparameters every optimizer takes.
std::vector<KeySpec> with_decay(std::vector<KeySpec> specs, double wd, const char* kind) {
  specs.push_back(make_key("weight_decay", Type::Float, wd, std::string(kind) + " weight decay")
                      .at_least(0)
                      .alias("wd"));
  specs.push_back(make_key("no_decay_1d", Type::Bool, false,
                           "no weight decay (and no trust ratio) for parameters with <= 1 "
                           "dimension"));
  return specs;
}

std::vector<OptimizerInfo> build_registry() {
  using R = kernels::OptimRule;
  const char* coupled = "coupled L2 (g <- g + wd theta)";
  const char* decoupled = "decoupled";
  auto adam_like = [&](double eps_default) {
    return std::vector<KeySpec>{
        learning_rate(),
        unit_interval("beta1", "first-moment decay", 0.9).alias("b1").alias("beta_1"),
        unit_interval("beta2", "second-moment decay", 0.999).alias("b2").alias("beta_2"),
        epsilon(eps_default, "added to sqrt(v)")};
  };
  std::vector<OptimizerInfo> r;
  r.push_back(
      {"sgd", R::kSgd, "theta <- theta - eta g", with_decay({learning_rate()}, 0.0, coupled), {}});
  r.push_back({"momentum",
               R::kMomentum,
               "v <- gamma v + g; theta <- theta - eta v",
               with_decay({learning_rate(), momentum(0.9)}, 0.0, coupled),
               {"momentum"}});
  r.push_back({"nesterov",
               R::kNesterov,
               "v <- gamma v + g; theta <- theta - eta (gamma v + g)",
               with_decay({learning_rate(), momentum(0.9)}, 0.0, coupled),
               {"momentum"}});
  r.push_back({"rmsprop",
               R::kRmsProp,
               "v <- rho v + (1 - rho) g^2 (v_0 = 1); m <- gamma m + eta / sqrt(v + eps) g; "
               "theta <- theta - m",
               with_decay({learning_rate(), unit_interval("rho", "second-moment decay", 0.9),
                           momentum(0.0), epsilon(1e-8, "added to v inside the sqrt")},
                          0.0, coupled),
               {"square_avg", "momentum"}});
  r.push_back({"adam",
               R::kAdam,
               "theta <- theta - alpha m / (sqrt(v) + eps) b_t, b_t = sqrt(1 - beta2^t) / "
               "(1 - beta1^t)",
               with_decay(adam_like(1e-8), 0.0, coupled),
               {"exp_avg", "exp_avg_sq"}});
  r.push_back({"nadam",
               R::kNAdam,
               "theta <- theta - alpha (beta1 m + (1 - beta1) g) / (sqrt(v) + eps) b_t",
               with_decay(adam_like(1e-8), 0.0, coupled),
               {"exp_avg", "exp_avg_sq"}});
  r.push_back({"adamw",
               R::kAdamW,
               "adam with decoupled weight decay: theta <- theta - alpha wd theta - adam step",
               with_decay(adam_like(1e-8), 0.01, decoupled),
               {"exp_avg", "exp_avg_sq"}});
  r.push_back(
      {"lars",
       R::kLars,
       "layer-wise trust ratio tau = trust_coefficient ||theta|| / (||g|| + wd ||theta|| + "
       "eps); v <- gamma v + eta tau (g + wd theta); theta <- theta - v",
       with_decay({learning_rate(), momentum(0.9),
                   make_key("trust_coefficient", Type::Float, 0.001, "eta of the trust ratio")
                       .greater_than(0),
                   epsilon(0.0, "added to the trust-ratio denominator")},
                  0.0, coupled),
       {"momentum"}});
  r.push_back({"lamb",
               R::kLamb,
               "r = m^ / (sqrt(v^) + eps) + wd theta; theta <- theta - eta ||theta|| / ||r|| r",
               with_decay(adam_like(1e-6), 0.01, decoupled),
               {"exp_avg", "exp_avg_sq"}});
  return r;
}

}  // namespace

const std::vector<OptimizerInfo>& optimizer_registry() {
  static const std::vector<OptimizerInfo> registry = [] {
    std::vector<OptimizerInfo> r = build_registry();
    if (r.size() != static_cast<std::size_t>(kernels::kOptimRuleCount)) {
      throw Error("optimizer registry: one entry per kernels::OptimRule is required");
    }
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (static_cast<std::size_t>(r[i].rule) != i ||
          static_cast<int>(r[i].slots.size()) != kernels::optim_slot_count(r[i].rule)) {
        throw Error("optimizer registry: entry " + r[i].name +
                    " is out of order or has the "
                    "wrong slot count");
      }
    }
    return r;
  }();
  return registry;
}

std::vector<std::string> optimizer_names() {
  return entry_names(optimizer_registry());
}

const OptimizerInfo& optimizer_info(std::string_view name) {
  return find_entry(optimizer_registry(), name, "optimizer");
}

// ---- Optimizer ----------------------------------------------------------------------------------

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<NamedTensor> params)
    : info_(&optimizer_info(config.name)),
      no_decay_patterns_(config.no_decay_patterns),
      params_(std::move(params)) {
  const std::string what = "optimizer " + info_->name;
  hyperparameters_ = config::resolve_numbers(what, info_->hyperparameters, config.hyperparameters);

  if (params_.empty()) fail("{}: no parameters to optimize", what);
  std::set<std::string> seen;
  for (const auto& [name, p] : params_) {
    if (!p.defined()) fail("{}: parameter '{}' is undefined", what, name);
    if (!seen.insert(name).second) fail("{}: parameter name '{}' appears twice", what, name);
  }
  device_ = params_[0].second.device();
  dtype_ = params_[0].second.dtype();
  for (const auto& [name, p] : params_) {
    if (p.device() != device_ || p.dtype() != dtype_) {
      fail(
          "{}: parameter '{}' is {} on {} but '{}' is {} on {}; all parameters must share a "
          "device and dtype",
          what, name, dtype_name(p.dtype()), p.device().str(), params_[0].first, dtype_name(dtype_),
          device_.str());
    }
  }
  if (dtype_ != DType::F32 && dtype_ != DType::F64) {
    fail("{}: parameters must be float32 or float64, got {}", what, dtype_name(dtype_));
  }
  if (device_.is_cuda() && dtype_ != DType::F32) {
    fail("{}: CUDA parameters must be float32, got {}", what, dtype_name(dtype_));
  }
  for (const std::string& pattern : no_decay_patterns_) {
    if (pattern.empty()) fail("{}: empty no_decay pattern", what);
  }

  const bool no_decay_1d = hyperparameters_.at("no_decay_1d") != 0.0;
  const TensorOptions options = TensorOptions{}.with_dtype(dtype_).with_device(device_);
  for (const auto& [name, p] : params_) {
    bool decay = !(no_decay_1d && p.ndim() <= 1);
    for (const std::string& pattern : no_decay_patterns_) {
      if (glob_match(pattern, name)) decay = false;
    }
    decays_.push_back(decay);
    std::vector<Tensor> slots;
    for (std::size_t s = 0; s < info_->slots.size(); ++s) {
      // RMSProp starts its second-moment estimate at v_0 = 1 (the playbook's convention).
      const bool ones = info_->rule == kernels::OptimRule::kRmsProp && s == 0;
      slots.push_back(ones ? full(p.shape(), 1.0, options) : zeros(p.shape(), options));
    }
    slots_.push_back(std::move(slots));
  }
}

double Optimizer::hyperparameter(std::string_view name) const {
  const auto it = hyperparameters_.find(std::string(name));
  if (it == hyperparameters_.end()) {
    std::vector<std::string> known;
    for (const auto& [k, v] : hyperparameters_) known.push_back(k);
    fail("optimizer {}: no hyperparameter '{}'{}", info_->name, name,
         config::did_you_mean_hint(name, known));
  }
  return it->second;
}

nlohmann::json Optimizer::to_json() const {
  nlohmann::json j;
  j["name"] = info_->name;
  j["hyperparameters"] = hyperparameters_;
  j["no_decay_patterns"] = no_decay_patterns_;
  std::vector<std::string> excluded;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!decays_[i]) excluded.push_back(params_[i].first);
  }
  j["no_decay_parameters"] = excluded;
  j["step"] = step_;
  return j;
}

void Optimizer::check_scalar(const char* what, const Tensor& t) const {
  if (!t.defined()) return;
  if (t.numel() != 1 || t.dtype() != dtype_ || t.device() != device_) {
    fail("optimizer {}: {} must be one {} element on {}, got {} {} on {}", info_->name, what,
         dtype_name(dtype_), device_.str(), t.shape().str(), dtype_name(t.dtype()),
         t.device().str());
  }
}

namespace {

template <typename T>
std::vector<kernels::OptimTensor<T>> build_list(const std::vector<NamedTensor>& params,
                                                const std::vector<std::vector<Tensor>>& slots,
                                                const std::vector<bool>& decays,
                                                const std::vector<Tensor>* updates, double wd,
                                                std::vector<bool>& included) {
  std::vector<kernels::OptimTensor<T>> list;
  included.assign(params.size(), false);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    kernels::OptimTensor<T> t;
    t.param = p.data<T>();
    t.grad = g.data<T>();
    t.slot0 = slots[i].size() > 0 ? slots[i][0].data<T>() : nullptr;
    t.slot1 = slots[i].size() > 1 ? slots[i][1].data<T>() : nullptr;
    t.update = updates ? (*updates)[i].data<T>() : nullptr;
    t.n = p.numel();
    t.weight_decay = decays[i] ? static_cast<T>(wd) : T(0);
    t.adapt = decays[i];
    list.push_back(t);
    included[i] = true;
  }
  return list;
}

template <typename T>
T* scalar_ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void Optimizer::run(const std::vector<Tensor>* updates, double lr, const Tensor& grad_scale) {
  const std::string what = "optimizer " + info_->name;
  if (!std::isfinite(lr) || lr < 0.0)
    fail("{}: learning rate {} must be finite and >= 0", what, lr);
  check_scalar("grad_scale", grad_scale);
  for (const auto& [name, p] : params_) {
    const Tensor g = p.grad();
    if (g.defined() && (g.device() != device_ || g.dtype() != dtype_)) {
      fail("{}: gradient of '{}' is {} on {}, expected {} on {}", what, name, dtype_name(g.dtype()),
           g.device().str(), dtype_name(dtype_), device_.str());
    }
  }
  if (updates) {
    if (updates->size() != params_.size()) {
      fail("{}: {} update tensors for {} parameters", what, updates->size(), params_.size());
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Tensor& u = (*updates)[i];
      const Tensor& p = params_[i].second;
      if (!p.grad().defined()) continue;
      if (!u.defined() || u.shape() != p.shape() || u.dtype() != dtype_ || u.device() != device_) {
        fail("{}: update tensor {} for '{}' must be {} {} on {}", what, i, params_[i].first,
             p.shape().str(), dtype_name(dtype_), device_.str());
      }
    }
  }

  kernels::OptimStep s;
  s.rule = info_->rule;
  s.t = step_ + 1;
  s.lr = lr;
  const auto get = [&](const char* key, double fallback) {
    const auto it = hyperparameters_.find(key);
    return it == hyperparameters_.end() ? fallback : it->second;
  };
  s.momentum = get("momentum", 0.0);
  s.rho = get("rho", 0.9);
  s.beta1 = get("beta1", 0.9);
  s.beta2 = get("beta2", 0.999);
  s.eps = get("epsilon", 0.0);
  s.trust_coefficient = get("trust_coefficient", 0.001);
  const double wd = hyperparameters_.at("weight_decay");

  autograd::NoGradGuard no_grad;
  std::vector<bool> included;
  if (device_.is_cpu()) {
    if (dtype_ == DType::F64) {
      const auto list = build_list<double>(params_, slots_, decays_, updates, wd, included);
      kernels::optim_update_cpu<double>(s, static_cast<int64_t>(list.size()), list.data(),
                                        scalar_ptr<double>(grad_scale));
    } else {
      const auto list = build_list<float>(params_, slots_, decays_, updates, wd, included);
      kernels::optim_update_cpu<float>(s, static_cast<int64_t>(list.size()), list.data(),
                                       scalar_ptr<float>(grad_scale));
    }
  } else {
#ifdef PB_WITH_CUDA
    const auto list = build_list<float>(params_, slots_, decays_, updates, wd, included);
    const int64_t count = static_cast<int64_t>(list.size());
    const int64_t bytes = kernels::optim_cuda_workspace_bytes(s.rule, count, list.data());
    if (bytes > 0 && (!workspace_.defined() || static_cast<int64_t>(workspace_.nbytes()) < bytes)) {
      // The launcher zeroes its counters on every call (kernels/optim.h): no initialisation.
      workspace_ = empty(Shape{(bytes + 7) / 8},
                         TensorOptions{}.with_dtype(DType::F64).with_device(device_));
    }
    kernels::optim_update_cuda(device::launch_stream(device_), s, count, list.data(),
                               scalar_ptr<float>(grad_scale),
                               bytes > 0 ? workspace_.raw_data() : nullptr);
#else
    fail<NotImplementedError>("{}: parameters on {} but playbook was built without CUDA", what,
                              device_.str());
#endif
  }
  ++step_;
}

void Optimizer::step(double lr, const Tensor& grad_scale) {
  run(nullptr, lr, grad_scale);
}

void Optimizer::compute_updates(const std::vector<Tensor>& updates, double lr,
                                const Tensor& grad_scale) {
  run(&updates, lr, grad_scale);
}

void Optimizer::apply_updates(const std::vector<Tensor>& updates, const Tensor& scale) {
  const std::string what = "optimizer " + info_->name;
  if (!scale.defined()) fail("{}: apply_updates needs a scale", what);
  check_scalar("scale", scale);
  if (updates.size() != params_.size()) {
    fail("{}: {} update tensors for {} parameters", what, updates.size(), params_.size());
  }
  // Parameters without a gradient were not part of compute_updates: their entries are stale.
  auto pairs_of = [&]<typename T>() {
    std::vector<kernels::TensorPair<T>> pairs;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i].second;
      if (!p.grad().defined()) continue;
      const Tensor& u = updates[i];
      if (!u.defined() || u.shape() != p.shape() || u.dtype() != dtype_ || u.device() != device_) {
        fail("{}: update tensor {} for '{}' must be {} {} on {}", what, i, params_[i].first,
             p.shape().str(), dtype_name(dtype_), device_.str());
      }
      pairs.push_back({p.data<T>(), u.data<T>(), p.numel()});
    }
    return pairs;
  };
  run_on_pairs(
      device_, dtype_, pairs_of, scale,
      [](int64_t n, const auto* pairs, const auto* s) {
        kernels::apply_scaled_update_cpu(n, pairs, s);
      },
      [](cudaStream_t stream, int64_t n, const kernels::TensorPair<float>* pairs, const float* s) {
        kernels::apply_scaled_update_cuda(stream, n, pairs, s);
      });
}

void Optimizer::zero_grad() {
  for (const auto& [name, p] : params_) p.set_grad(Tensor{});
}

std::vector<NamedTensor> Optimizer::state_dict() const {
  std::vector<NamedTensor> out;
  out.emplace_back("state.step",
                   from_vector<double>(std::vector<double>{static_cast<double>(step_)}, Shape{}));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t s = 0; s < info_->slots.size(); ++s) {
      out.emplace_back("state." + params_[i].first + "." + info_->slots[s], slots_[i][s].clone());
    }
  }
  return out;
}

void Optimizer::load_state_dict(const std::vector<NamedTensor>& state) {
  const std::string what = "optimizer " + info_->name + ": load_state_dict";
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) {
    if (!name.starts_with("state.")) continue;  // other entries of a checkpoint
    if (!by_name.emplace(name, &t).second) fail("{}: '{}' appears twice", what, name);
  }
  std::vector<std::string> expected = {"state.step"};
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (const std::string& slot : info_->slots) {
      expected.push_back("state." + params_[i].first + "." + slot);
    }
  }
  std::vector<std::string> missing;
  for (const std::string& name : expected) {
    if (!by_name.count(name)) missing.push_back(name);
  }
  if (!missing.empty()) {
    if (missing.size() > 5) missing.resize(5);
    fail("{}: missing {} (was the state saved by a different optimizer or model?)", what,
         config::quoted_list(missing));
  }
  for (const auto& [name, t] : by_name) {
    if (std::find(expected.begin(), expected.end(), name) == expected.end()) {
      fail("{}: unexpected entry '{}'{} for optimizer {}", what, name,
           config::did_you_mean_hint(name, expected), info_->name);
    }
  }
  const Tensor& step_tensor = *by_name.at("state.step");
  if (step_tensor.numel() != 1 || step_tensor.dtype() != DType::F64) {
    fail("{}: 'state.step' must be one float64 element, got {} {}", what, step_tensor.shape().str(),
         dtype_name(step_tensor.dtype()));
  }
  const double step_value = step_tensor.to_vector<double>()[0];
  if (!(step_value >= 0.0) || step_value != std::floor(step_value) || step_value > 9.0e15) {
    fail("{}: 'state.step' = {} is not a step count", what, step_value);
  }
  // Check every slot before changing anything.
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t s = 0; s < info_->slots.size(); ++s) {
      const std::string name = "state." + params_[i].first + "." + info_->slots[s];
      const Tensor& src = *by_name.at(name);
      if (src.shape() != slots_[i][s].shape() || src.dtype() != dtype_) {
        fail<ShapeError>("{}: '{}' is {} {}, expected {} {}", what, name, src.shape().str(),
                         dtype_name(src.dtype()), slots_[i][s].shape().str(), dtype_name(dtype_));
      }
    }
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t s = 0; s < info_->slots.size(); ++s) {
      slots_[i][s].copy_(*by_name.at("state." + params_[i].first + "." + info_->slots[s]));
    }
  }
  step_ = static_cast<int64_t>(step_value);
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config,
                                          std::vector<NamedTensor> params) {
  return std::make_unique<Optimizer>(config, std::move(params));
}

}  // namespace pb::optim
