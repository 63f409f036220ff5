#include "runtime/optim/ema.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <set>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "kernels/optim.h"
#include "runtime/autograd/tape.h"
#include "runtime/core/error.h"
#include "runtime/device/cuda_device.h"

namespace pb::optim {

const std::vector<config::KeySpec>& ema_keys() {
  static const std::vector<config::KeySpec> keys = {
      config::make_key("decay", config::Type::Float, 0.0,
                       "Polyak/exponential moving average of the weights used for evaluation: "
                       "ema <- decay ema + (1 - decay) theta (0: off)")
          .at_least(0)
          .less_than(1)
          .alias("train.ema_decay"),
      config::make_key("warmup", config::Type::Bool, false,
                       "ramp the decay as min(decay, (1 + t) / (10 + t))")
          .alias("train.ema_warmup"),
  };
  return keys;
}

EmaConfig ema_config_from(const std::map<std::string, double>& hyperparameters) {
  const std::map<std::string, double> hp =
      config::resolve_numbers("ema", ema_keys(), hyperparameters);
  return EmaConfig{hp.at("decay"), hp.at("warmup") != 0.0};
}

ExponentialMovingAverage::ExponentialMovingAverage(std::vector<NamedTensor> params,
                                                   EmaConfig config)
    : config_(config), params_(std::move(params)) {
  if (!(config_.decay >= 0.0 && config_.decay < 1.0)) {
    fail("ema: decay = {} is out of range [0, 1)", config_.decay);
  }
  if (params_.empty()) fail("ema: no parameters to average");
  std::set<std::string> seen;
  for (const auto& [name, p] : params_) {
    if (!p.defined()) fail("ema: parameter '{}' is undefined", name);
    if (!seen.insert(name).second) fail("ema: parameter name '{}' appears twice", name);
  }
  device_ = params_[0].second.device();
  dtype_ = params_[0].second.dtype();
  for (const auto& [name, p] : params_) {
    if (p.device() != device_ || p.dtype() != dtype_) {
      fail("ema: parameter '{}' is {} on {} but '{}' is {} on {}", name, dtype_name(p.dtype()),
           p.device().str(), params_[0].first, dtype_name(dtype_), device_.str());
    }
  }
  if (dtype_ != DType::F32 && dtype_ != DType::F64) {
    fail("ema: parameters must be float32 or float64, got {}", dtype_name(dtype_));
  }
  if (device_.is_cuda() && dtype_ != DType::F32) {
    fail("ema: CUDA parameters must be float32, got {}", dtype_name(dtype_));
  }
  for (const auto& [name, p] : params_) averages_.emplace_back(name, p.detach().clone());
}

double ExponentialMovingAverage::next_decay() const {
  if (!config_.warmup) return config_.decay;
  const double t = static_cast<double>(num_updates_);
  return std::min(config_.decay, (1.0 + t) / (10.0 + t));
}

void ExponentialMovingAverage::check_not_swapped(const char* what) const {
  if (swapped_)
    fail("ema: {} while the averages are swapped into the model; swap back first", what);
}

template <typename Fn>
void ExponentialMovingAverage::for_pairs(Fn&& fn) {
  for (const auto& [name, p] : params_) {
    if (p.device() != device_ || p.dtype() != dtype_) {
      fail("ema: parameter '{}' moved to {} {} after the average was created on {} {}", name,
           dtype_name(p.dtype()), p.device().str(), dtype_name(dtype_), device_.str());
    }
  }
  auto pairs_of = [&]<typename T>() {
    std::vector<kernels::TensorPair<T>> pairs;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      pairs.push_back(
          {params_[i].second.data<T>(), averages_[i].second.data<T>(), params_[i].second.numel()});
    }
    return pairs;
  };
  autograd::NoGradGuard no_grad;
  if (device_.is_cpu()) {
    if (dtype_ == DType::F64) {
      const auto pairs = pairs_of.template operator()<double>();
      fn(pairs, nullptr);
    } else {
      const auto pairs = pairs_of.template operator()<float>();
      fn(pairs, nullptr);
    }
  } else {
#ifdef PB_WITH_CUDA
    const auto pairs = pairs_of.template operator()<float>();
    fn(pairs, device::launch_stream(device_));
#else
    fail<NotImplementedError>("ema: parameters on {} but playbook was built without CUDA",
                              device_.str());
#endif
  }
}

void ExponentialMovingAverage::update() {
  check_not_swapped("update");
  const double decay = next_decay();
  for_pairs([&]<typename T>(const std::vector<kernels::TensorPair<T>>& pairs, cudaStream_t stream) {
    const int64_t count = static_cast<int64_t>(pairs.size());
    if (device_.is_cpu()) {
      kernels::ema_update_cpu<T>(count, pairs.data(), static_cast<T>(decay));
    } else {
#ifdef PB_WITH_CUDA
      if constexpr (std::is_same_v<T, float>) {
        kernels::ema_update_cuda(stream, count, pairs.data(), static_cast<float>(decay));
      }
#else
      (void)stream;
#endif
    }
  });
  ++num_updates_;
}

void ExponentialMovingAverage::swap() {
  for_pairs([&]<typename T>(const std::vector<kernels::TensorPair<T>>& pairs, cudaStream_t stream) {
    const int64_t count = static_cast<int64_t>(pairs.size());
    if (device_.is_cpu()) {
      kernels::swap_tensors_cpu<T>(count, pairs.data());
    } else {
#ifdef PB_WITH_CUDA
      if constexpr (std::is_same_v<T, float>) {
        kernels::swap_tensors_cuda(stream, count, pairs.data());
      }
#else
      (void)stream;
#endif
    }
  });
  swapped_ = !swapped_;
}

std::vector<NamedTensor> ExponentialMovingAverage::state_dict() const {
  check_not_swapped("state_dict");
  std::vector<NamedTensor> out;
  out.emplace_back(
      "ema.num_updates",
      from_vector<double>(std::vector<double>{static_cast<double>(num_updates_)}, Shape{}));
  for (const auto& [name, a] : averages_) out.emplace_back("ema." + name, a.clone());
  return out;
}

void ExponentialMovingAverage::load_state_dict(const std::vector<NamedTensor>& state) {
  check_not_swapped("load_state_dict");
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) {
    if (name.starts_with("ema.")) by_name[name] = &t;
  }
  std::vector<std::string> expected = {"ema.num_updates"};
  for (const auto& [name, a] : averages_) expected.push_back("ema." + name);
  for (const std::string& name : expected) {
    if (!by_name.count(name)) fail("ema: load_state_dict: missing '{}'", name);
  }
  for (const auto& [name, t] : by_name) {
    if (std::find(expected.begin(), expected.end(), name) == expected.end()) {
      fail("ema: load_state_dict: unexpected entry '{}'{}", name,
           config::did_you_mean_hint(name, expected));
    }
  }
  const Tensor& count = *by_name.at("ema.num_updates");
  if (count.numel() != 1 || count.dtype() != DType::F64) {
    fail("ema: load_state_dict: 'ema.num_updates' must be one float64 element");
  }
  const double n = count.to_vector<double>()[0];
  if (!(n >= 0.0) || n != std::floor(n)) fail("ema: 'ema.num_updates' = {} is not a count", n);
  for (const auto& [name, a] : averages_) {
    const Tensor& src = *by_name.at("ema." + name);
    if (src.shape() != a.shape() || src.dtype() != a.dtype()) {
      fail<ShapeError>("ema: load_state_dict: 'ema.{}' is {} {}, expected {} {}", name,
                       src.shape().str(), dtype_name(src.dtype()), a.shape().str(),
                       dtype_name(a.dtype()));
    }
  }
  for (const auto& [name, a] : averages_) a.copy_(*by_name.at("ema." + name));
  num_updates_ = static_cast<int64_t>(n);
}

nlohmann::json ExponentialMovingAverage::to_json() const {
  nlohmann::json j;
  j["decay"] = config_.decay;
  j["warmup"] = config_.warmup;
  j["num_updates"] = num_updates_;
  return j;
}

EmaSwap::EmaSwap(ExponentialMovingAverage& ema) : ema_(ema) {
  if (ema_.swapped_in()) fail("ema: the averages are already swapped into the model");
  ema_.swap();
}

EmaSwap::~EmaSwap() {
  try {
    ema_.swap();
  } catch (const std::exception& e) {  // a destructor must not throw: report and go on
    std::fprintf(stderr, "playbook: warning: swapping the EMA averages back failed: %s\n",
                 e.what());
  }
}

}  // namespace pb::optim
