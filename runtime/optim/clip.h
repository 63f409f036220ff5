#pragma once
// Clipping by global L2 norm, measured on the device every step.
//
// The playbook's rule: if ||g|| > lambda then g' = lambda g / ||g||, with ||g|| the norm of all
// gradients together, and "log the unclipped gradient norm during training" (its 90th
// percentile is the suggested threshold; more than 50% of steps clipped is "extremely
// aggressive"). So every step:
//
//   1. ||g|| over all gradients, one fused reduction (kernels/reduce.h global_l2_norm) into a
//      device scalar: grad_norm(), the unclipped norm, read only at log steps;
//   2. one thread on the device turns the norm into the factor s = min(1, lambda / ||g||) and
//      counts the step as clipped when s < 1 (kernels/optim.h clip_coefficient);
//   3. gradient target: the optimizer's fused update multiplies every gradient by s as it reads
//      it (no extra pass over the gradients); update target: the optimizer writes its step D to
//      buffers, ||D|| is reduced the same way, and theta <- theta - min(1, lambda / ||D||) D.
//
// Nothing waits for the device: the norm, the factor and the clipped count stay in device
// memory; read_grad_norm() and read_stats() synchronise and are meant for log steps.
//
//   GradientClipper clipper(ClipConfig{.max_norm = 1.0});
//   ... loss.backward(); clipper.step(*optimizer, schedule(step)); ...
//   if (log_step) metrics["grad_norm"] = clipper.read_grad_norm();
//
// max_norm = 0 turns clipping off but keeps measuring the norm, so the threshold can be chosen
// from a run's norms.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/core/tensor.h"
#include "runtime/optim/optimizer.h"

namespace pb::optim {

enum class ClipTarget { kGradient, kUpdate };

struct ClipConfig {
  double max_norm;    // lambda; 0: no clipping, the norm is still measured
  ClipTarget target;  // what is clipped
};

// The clipping keys (the training config's [clip] section): max_norm (>= 0, default 0: off) and
// clip_update (bool, default false: clip the gradient; true: clip the update).
const std::vector<config::KeySpec>& clip_keys();
// From a hyperparameter map over clip_keys() (bools as 0 / 1), checked against them.
ClipConfig clip_config_from(const std::map<std::string, double>& hyperparameters);

struct ClipStats {
  int64_t steps = 0;          // steps seen
  int64_t clipped_steps = 0;  // steps whose norm exceeded max_norm
  double clipped_fraction = 0.0;
};

class GradientClipper {
 public:
  explicit GradientClipper(ClipConfig config = {0.0, ClipTarget::kGradient});

  const ClipConfig& config() const { return config_; }

  // One optimizer step with learning rate `lr`, measuring and clipping as configured (see the top
  // of this file): the clip factor and `lr` are arguments of the optimizer's fused update. The
  // gradients themselves are left unscaled.
  void step(Optimizer& optimizer, double lr);

  // Measures the global norm of the defined tensors of `grads` and, when it exceeds max_norm,
  // rescales each in place by max_norm / norm (one norm reduction, one one-thread kernel, one
  // multi-tensor scale launch that returns at once when nothing is clipped). Counts a step.
  void clip_gradients(const std::vector<Tensor>& grads);

  // Device scalars of the last step (undefined before the first).
  const Tensor& grad_norm() const { return grad_norm_; }      // the unclipped gradient norm
  const Tensor& update_norm() const { return update_norm_; }  // update target: unclipped ||D||
  const Tensor& scale() const { return scale_; }              // the factor applied (1: none)

  // Host reads: these synchronise with the device (log steps only).
  double read_grad_norm() const;
  ClipStats read_stats() const;

  // "clip.steps" and "clip.clipped_steps" (float64 scalars), for checkpoints.
  std::vector<NamedTensor> state_dict() const;
  void load_state_dict(const std::vector<NamedTensor>& state);
  // {"max_norm": 1.0, "target": "gradient"}
  nlohmann::json to_json() const;

 private:
  void ensure_scalars(Device device, DType dtype);
  // Writes the global L2 norm of `tensors` into `out` (device scalar).
  void measure(const std::vector<Tensor>& tensors, const Tensor& out);
  // scale_ = min(1, max_norm / norm) and the clipped count, on the device.
  void coefficient(const Tensor& norm);

  ClipConfig config_;
  Tensor grad_norm_, update_norm_, scale_;
  Tensor clipped_;  // float64 (1) on the device: clipped steps
  int64_t steps_ = 0;
  double pending_clipped_ = 0.0;  // restored before clipped_ existed (its device is not known)
  std::vector<Tensor> updates_;   // update target: one buffer per parameter
  Tensor norm_list_;              // CUDA: the tensor pointers and sizes read by the norm kernel
  Tensor workspace_;              // CUDA: kernels/reduce.h workspace
};

}  // namespace pb::optim
