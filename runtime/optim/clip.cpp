#include "runtime/optim/clip.h"

#include <cmath>
#include <limits>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "runtime/autograd/tape.h"
#include "runtime/core/error.h"
#include "runtime/device/cuda_device.h"
#include "runtime/optim/pairs.h"

#ifdef PB_WITH_CUDA
#include "runtime/device/pinned.h"
#endif

namespace pb::optim {

const std::vector<config::KeySpec>& clip_keys() {
  static const std::vector<config::KeySpec> keys = {
      config::make_key("max_norm", config::Type::Float, 0.0,
                       "clip the global gradient norm to this (0: off; the norm is always logged)")
          .at_least(0)
          .alias("clip_norm")
          .alias("train.clip_norm"),
      config::make_key("clip_update", config::Type::Bool, false,
                       "clip the update (the step the optimizer computes) instead of the gradient")
          .alias("update"),
  };
  return keys;
}

ClipConfig clip_config_from(const std::map<std::string, double>& hyperparameters) {
  const std::map<std::string, double> hp =
      config::resolve_numbers("clipping", clip_keys(), hyperparameters);
  return ClipConfig{hp.at("max_norm"),
                    hp.at("clip_update") != 0.0 ? ClipTarget::kUpdate : ClipTarget::kGradient};
}

GradientClipper::GradientClipper(ClipConfig config) : config_(config) {
  if (!(config_.max_norm >= 0.0) || std::isinf(config_.max_norm)) {
    fail("clipping: max_norm = {} must be finite and >= 0 (0 turns clipping off)",
         config_.max_norm);
  }
}

void GradientClipper::ensure_scalars(Device device, DType dtype) {
  if (grad_norm_.defined() && grad_norm_.device() == device && grad_norm_.dtype() == dtype) return;
  const TensorOptions options = TensorOptions{}.with_dtype(dtype).with_device(device);
  const double clipped_so_far =
      clipped_.defined() ? clipped_.to_vector<double>()[0] : pending_clipped_;
  grad_norm_ = zeros(Shape{}, options);
  update_norm_ = zeros(Shape{}, options);
  scale_ = full(Shape{}, 1.0, options);
  clipped_ =
      full(Shape{1}, clipped_so_far, TensorOptions{}.with_dtype(DType::F64).with_device(device));
  pending_clipped_ = 0.0;
}

void GradientClipper::measure(const std::vector<Tensor>& tensors, const Tensor& out) {
  const Device device = out.device();
  const DType dtype = out.dtype();
  for (const Tensor& t : tensors) {
    if (t.device() != device || t.dtype() != dtype) {
      fail("clipping: tensors must share one device and dtype ({} on {}), got {} on {}",
           dtype_name(dtype), device.str(), dtype_name(t.dtype()), t.device().str());
    }
  }
  const int count = static_cast<int>(tensors.size());
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) sizes.push_back(t.numel());
  if (device.is_cpu()) {
    auto run = [&]<typename T>() {
      std::vector<const T*> ptrs;
      for (const Tensor& t : tensors) ptrs.push_back(t.data<T>());
      kernels::global_l2_norm_cpu<T>(count, ptrs.data(), sizes.data(), out.data<T>());
    };
    if (dtype == DType::F64) {
      run.template operator()<double>();
    } else {
      run.template operator()<float>();
    }
    return;
  }
#ifdef PB_WITH_CUDA
  // The norm kernel reads the pointer and size arrays from device memory. They change every step
  // (autograd allocates fresh gradients), so they go up with a stream-ordered copy from pinned
  // memory: no host sync, and the pinned block is reused only after the copy has completed.
  const std::size_t bytes = static_cast<std::size_t>(count) * 16;
  if (!norm_list_.defined() || norm_list_.nbytes() < bytes || norm_list_.device() != device) {
    norm_list_ = empty(Shape{2 * static_cast<int64_t>(count)},
                       TensorOptions{}.with_dtype(DType::F64).with_device(device));
  }
  if (!workspace_.defined() || workspace_.device() != device) {
    workspace_ = empty(Shape{(kernels::reduce_cuda_workspace_bytes() + 7) / 8},
                       TensorOptions{}.with_dtype(DType::F64).with_device(device));
  }
  cudaStream_t stream = device::launch_stream(device);
  auto* d_ptrs = static_cast<const float* const*>(norm_list_.raw_data());
  auto* d_sizes = reinterpret_cast<const int64_t*>(static_cast<const char*>(norm_list_.raw_data()) +
                                                   static_cast<std::size_t>(count) * 8);
  if (count > 0) {
    device::PinnedBuffer host(bytes);
    auto* h_ptrs = host.data_as<const float*>();
    auto* h_sizes =
        reinterpret_cast<int64_t*>(host.data_as<char>() + static_cast<std::size_t>(count) * 8);
    for (int i = 0; i < count; ++i) {
      h_ptrs[i] = tensors[static_cast<std::size_t>(i)].data<float>();
      h_sizes[i] = sizes[static_cast<std::size_t>(i)];
    }
    device::copy_async(norm_list_.raw_data(), device, host.data(), Device::cpu(), bytes, stream);
  }
  kernels::global_l2_norm_cuda(stream, count, d_ptrs, d_sizes, out.data<float>(),
                               workspace_.raw_data());
#else
  fail<NotImplementedError>("clipping: tensors on {} but playbook was built without CUDA",
                            device.str());
#endif
}

void GradientClipper::coefficient(const Tensor& norm) {
  const Device device = norm.device();
  double* clipped = clipped_.data<double>();
  if (device.is_cpu()) {
    if (norm.dtype() == DType::F64) {
      kernels::clip_coefficient_cpu<double>(norm.data<double>(), config_.max_norm,
                                            scale_.data<double>(), clipped);
    } else {
      kernels::clip_coefficient_cpu<float>(norm.data<float>(), static_cast<float>(config_.max_norm),
                                           scale_.data<float>(), clipped);
    }
    return;
  }
#ifdef PB_WITH_CUDA
  kernels::clip_coefficient_cuda(device::launch_stream(device), norm.data<float>(),
                                 static_cast<float>(config_.max_norm), scale_.data<float>(),
                                 clipped);
#endif
}

namespace {

std::vector<Tensor> defined_grads(const Optimizer& optimizer) {
  std::vector<Tensor> grads;
  for (const auto& [name, p] : optimizer.parameters()) {
    const Tensor g = p.grad();
    if (g.defined()) grads.push_back(g);
  }
  return grads;
}

}  // namespace

void GradientClipper::step(Optimizer& optimizer, double lr) {
  autograd::NoGradGuard no_grad;
  ensure_scalars(optimizer.device(), optimizer.dtype());
  measure(defined_grads(optimizer), grad_norm_);
  if (config_.target == ClipTarget::kGradient || config_.max_norm == 0.0) {
    coefficient(grad_norm_);
    optimizer.step(lr, scale_);  // the fused update multiplies each gradient by the factor
  } else {
    const std::vector<NamedTensor>& params = optimizer.parameters();
    if (updates_.size() != params.size()) {
      updates_.clear();
      for (const auto& [name, p] : params) updates_.push_back(empty_like(p));
    }
    optimizer.compute_updates(updates_, lr);
    std::vector<Tensor> computed;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].second.grad().defined()) computed.push_back(updates_[i]);
    }
    measure(computed, update_norm_);
    coefficient(update_norm_);
    optimizer.apply_updates(updates_, scale_);
  }
  ++steps_;
}

void GradientClipper::clip_gradients(const std::vector<Tensor>& grads) {
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> defined;
  for (const Tensor& g : grads) {
    if (g.defined()) defined.push_back(g);
  }
  if (defined.empty()) fail("clipping: no gradients to clip");
  ensure_scalars(defined[0].device(), defined[0].dtype());
  measure(defined, grad_norm_);
  coefficient(grad_norm_);
  const Device device = grad_norm_.device();
  auto pairs_of = [&]<typename T>() {
    std::vector<kernels::TensorPair<T>> pairs;
    for (const Tensor& g : defined) pairs.push_back({g.data<T>(), nullptr, g.numel()});
    return pairs;
  };
  run_on_pairs(
      device, grad_norm_.dtype(), pairs_of, scale_,
      [](int64_t n, const auto* pairs, const auto* scale) {
        kernels::scale_tensors_cpu(n, pairs, scale);
      },
      [](cudaStream_t stream, int64_t n, const kernels::TensorPair<float>* pairs,
         const float* scale) { kernels::scale_tensors_cuda(stream, n, pairs, scale); });
  ++steps_;
}

double GradientClipper::read_grad_norm() const {
  if (!grad_norm_.defined()) fail("clipping: no gradient norm yet (no step has run)");
  return grad_norm_.dtype() == DType::F64 ? grad_norm_.item<double>()
                                          : static_cast<double>(grad_norm_.item<float>());
}

ClipStats GradientClipper::read_stats() const {
  ClipStats stats;
  stats.steps = steps_;
  const double clipped = clipped_.defined() ? clipped_.to_vector<double>()[0] : pending_clipped_;
  stats.clipped_steps = static_cast<int64_t>(clipped);
  stats.clipped_fraction =
      steps_ > 0 ? static_cast<double>(stats.clipped_steps) / static_cast<double>(steps_) : 0.0;
  return stats;
}

std::vector<NamedTensor> GradientClipper::state_dict() const {
  const ClipStats stats = read_stats();
  return {
      {"clip.steps",
       from_vector<double>(std::vector<double>{static_cast<double>(stats.steps)}, Shape{})},
      {"clip.clipped_steps",
       from_vector<double>(std::vector<double>{static_cast<double>(stats.clipped_steps)}, Shape{})},
  };
}

void GradientClipper::load_state_dict(const std::vector<NamedTensor>& state) {
  std::unordered_map<std::string, double> values;
  for (const auto& [name, t] : state) {
    if (!name.starts_with("clip.")) continue;
    if (name != "clip.steps" && name != "clip.clipped_steps") {
      fail("clipping: load_state_dict: unexpected entry '{}'{}", name,
           config::did_you_mean_hint(name, {"clip.steps", "clip.clipped_steps"}));
    }
    if (t.numel() != 1 || t.dtype() != DType::F64) {
      fail("clipping: load_state_dict: '{}' must be one float64 element", name);
    }
    const double v = t.to_vector<double>()[0];
    if (!(v >= 0.0) || v != std::floor(v)) fail("clipping: '{}' = {} is not a count", name, v);
    values[name] = v;
  }
  for (const char* name : {"clip.steps", "clip.clipped_steps"}) {
    if (!values.count(name)) fail("clipping: load_state_dict: missing '{}'", name);
  }
  steps_ = static_cast<int64_t>(values.at("clip.steps"));
  const double clipped = values.at("clip.clipped_steps");
  if (clipped_.defined()) {
    clipped_.copy_(from_vector<double>(std::vector<double>{clipped}, Shape{1}));
  } else {
    pending_clipped_ = clipped;
  }
}

nlohmann::json GradientClipper::to_json() const {
  nlohmann::json j;
  j["max_norm"] = config_.max_norm;
  j["target"] = config_.target == ClipTarget::kGradient ? "gradient" : "update";
  return j;
}

}  // namespace pb::optim
