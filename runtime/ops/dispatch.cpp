#include "runtime/ops/dispatch.h"

#include <map>
#include <mutex>
#include <vector>

#include "kernels/reduce.h"

#include "runtime/core/module_scope.h"
#include "runtime/device/cuda_device.h"

namespace pb {

std::string op_where(OpKind op) {
  std::string s(op_schema(op).name);
  const std::string& module = current_module_path();
  if (!module.empty()) s += " (" + module + ")";
  return s;
}

namespace ops::detail {

void check_inputs(OpKind op, std::initializer_list<Arg> required,
                  std::initializer_list<Arg> optional) {
  const Tensor* first = nullptr;
  std::string_view first_name;
  auto check = [&](const Arg& a) {
    if (!is_floating(a.tensor->dtype())) {
      op_fail(op, "{} must be floating point, got {}", a.name, dtype_name(a.tensor->dtype()));
    }
    if (!first) {
      first = a.tensor;
      first_name = a.name;
      return;
    }
    if (a.tensor->dtype() != first->dtype()) {
      op_fail(op, "{} is {} but {} is {}", a.name, dtype_name(a.tensor->dtype()), first_name,
              dtype_name(first->dtype()));
    }
    if (a.tensor->device() != first->device()) {
      op_fail(op, "{} is on {} but {} is on {}", a.name, a.tensor->device().str(), first_name,
              first->device().str());
    }
  };
  for (const Arg& a : required) {
    if (!a.tensor->defined()) op_fail(op, "{} is undefined", a.name);
    check(a);
  }
  for (const Arg& a : optional) {
    if (a.tensor->defined()) check(a);
  }
}

void check_ndim(OpKind op, std::string_view name, const Tensor& t, int ndim) {
  if (t.ndim() != ndim) {
    op_fail(op, "{} must have {} dimensions, got shape {}", name, ndim, t.shape().str());
  }
}

void check_vector(OpKind op, std::string_view name, const Tensor& t, int64_t n) {
  if (t.defined() && (t.ndim() != 1 || t.dim(0) != n)) {
    op_fail(op, "{} must have shape ({}), got {}", name, n, t.shape().str());
  }
}

void check_labels(OpKind op, const Tensor& labels, int64_t N, int64_t K, const Tensor& like) {
  if (!labels.defined()) op_fail(op, "labels are undefined");
  if (labels.dtype() != DType::I32) {
    op_fail(op, "labels must be int32, got {}", dtype_name(labels.dtype()));
  }
  if (labels.ndim() != 1 || labels.dim(0) != N) {
    op_fail(op, "labels must have shape ({}) to match logits, got {}", N, labels.shape().str());
  }
  if (labels.device() != like.device()) {
    op_fail(op, "labels are on {} but logits are on {}", labels.device().str(),
            like.device().str());
  }
  if (!labels.device().is_cpu()) return;
  // Read in place: host labels need no copy (and a copy would count as a host read).
  const int32_t* values = labels.data<int32_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if (values[i] < 0 || values[i] >= K) {
      op_value_fail(op, "label {} of example {} is outside [0, {})", values[i], i, K);
    }
  }
}

cudaStream_t stream_for(Device device) {
  return pb::device::launch_stream(device);
}

void* reduce_workspace(Device device) {
#ifdef PB_WITH_CUDA
  static std::mutex mutex;
  static std::map<int, Tensor> workspaces;  // kept for the life of the process
  std::lock_guard<std::mutex> lock(mutex);
  Tensor& w = workspaces[device.index];
  if (!w.defined()) {
    const int64_t floats = (kernels::reduce_cuda_workspace_bytes() + 3) / 4;
    w = empty(Shape{floats}, TensorOptions{}.with_device(device));
  }
  return w.raw_data();
#else
  throw NotImplementedError("reduce_workspace: " + device.str() + " needs a CUDA build");
#endif
}

}  // namespace ops::detail
}  // namespace pb
