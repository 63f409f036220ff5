#pragma once
// Polyak / exponential moving average of the weights, for evaluation.
//
// The playbook lists Polyak averaging among the remedies for step-to-step variance of the
// validation metric. After every optimizer step:
//
//   ema <- d_t ema + (1 - d_t) theta        (one multi-tensor pass over all parameters)
//   d_t = decay, or with warmup min(decay, (1 + t) / (10 + t)), t = updates already averaged
//         (TensorFlow's ExponentialMovingAverage num_updates form: early averages forget the
//         random initialisation quickly)
//
// The averages start as a copy of the parameters. For evaluation they are swapped into the
// model in place (one pass exchanging contents, so handles held by the model, the optimizer and
// the data pipeline stay valid) and swapped back afterwards, bit for bit:
//
//   ExponentialMovingAverage ema(model.named_parameters(), {.decay = 0.999});
//   ... optimizer->step(); ema.update(); ...
//   { EmaSwap swapped(ema); evaluate(model); }   // model holds the averages inside the scope
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/optim/optimizer.h"

namespace pb::optim {

struct EmaConfig {
  double decay;  // in [0, 1)
  bool warmup;   // d_t = min(decay, (1 + t) / (10 + t))
};

// The EMA keys (the training config's [ema] section): decay (in [0, 1), default 0: off) and
// warmup (bool, default false).
const std::vector<config::KeySpec>& ema_keys();
// From a hyperparameter map over ema_keys() (bools as 0 / 1), checked against them.
EmaConfig ema_config_from(const std::map<std::string, double>& hyperparameters);

class ExponentialMovingAverage {
 public:
  // params: the tensors to average (model.named_parameters(); buffers may be added), all on one
  // device with one floating dtype.
  ExponentialMovingAverage(std::vector<NamedTensor> params, EmaConfig config);

  const EmaConfig& config() const { return config_; }
  // The decay the next update uses.
  double next_decay() const;
  int64_t num_updates() const { return num_updates_; }

  // ema <- d ema + (1 - d) theta. Not allowed while swapped in.
  void update();

  // Exchanges the model's tensors and the averages (call again to undo).
  void swap();
  bool swapped_in() const { return swapped_; }

  // The averages, named like the parameters (while swapped in they hold the live weights).
  const std::vector<NamedTensor>& averages() const { return averages_; }

  // "ema.num_updates" (float64 scalar) and "ema.<name>" copies. Not while swapped in.
  std::vector<NamedTensor> state_dict() const;
  void load_state_dict(const std::vector<NamedTensor>& state);
  // {"decay": 0.999, "warmup": false, "num_updates": 0}
  nlohmann::json to_json() const;

 private:
  void check_not_swapped(const char* what) const;
  template <typename Fn>
  void for_pairs(Fn&& fn);

  EmaConfig config_;
  std::vector<NamedTensor> params_;
  std::vector<NamedTensor> averages_;
  Device device_;
  DType dtype_ = DType::F32;
  int64_t num_updates_ = 0;
  bool swapped_ = false;
};

// Swaps the averages into the model for a scope and back on exit.
class EmaSwap {
 public:
  explicit EmaSwap(ExponentialMovingAverage& ema);
  ~EmaSwap();
  EmaSwap(const EmaSwap&) = delete;
  EmaSwap& operator=(const EmaSwap&) = delete;

 private:
  ExponentialMovingAverage& ema_;
};

}  // namespace pb::optim
