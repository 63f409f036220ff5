#pragma once
// Internal helpers shared by the op files: input checks whose errors name the op, the module and
// the shapes, and dispatch from a tensor's device and dtype to a kernel.
#include <initializer_list>
#include <string_view>
#include <type_traits>
#include <utility>

#include "kernels/common.h"
#include "runtime/core/tensor.h"
#include "runtime/ops/op_table.h"

namespace pb::ops::detail {

template <typename... Args>
[[noreturn]] void op_fail(OpKind op, fmt::format_string<Args...> format, Args&&... args) {
  throw ShapeError(op_where(op) + ": " + fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void op_value_fail(OpKind op, fmt::format_string<Args...> format, Args&&... args) {
  throw ValueError(op_where(op) + ": " + fmt::format(format, std::forward<Args>(args)...));
}

struct Arg {
  std::string_view name;
  const Tensor* tensor;
};

// Every argument is defined (unless optional and undefined) and floating point, and all defined
// ones share the first argument's dtype and device.
void check_inputs(OpKind op, std::initializer_list<Arg> required,
                  std::initializer_list<Arg> optional = {});
void check_ndim(OpKind op, std::string_view name, const Tensor& t, int ndim);
// t has shape (n) when defined.
void check_vector(OpKind op, std::string_view name, const Tensor& t, int64_t n);
// labels:(N) int32 on the same device as like. On the CPU the values are checked to be in
// [0,K); on a GPU that would cost a host sync every step, so the CUDA kernels turn a bad label
// into a NaN loss instead (kernels/loss.h), which divergence detection reports.
void check_labels(OpKind op, const Tensor& labels, int64_t N, int64_t K, const Tensor& like);

// The stream CUDA kernels of this device run on: its compute stream (runtime/device).
cudaStream_t stream_for(Device device);
// One reduction workspace per CUDA device (kernels/reduce.h: reduce_cuda_workspace_bytes()),
// shared by every reducing kernel, which all run on the device's compute stream.
void* reduce_workspace(Device device);

struct NoCuda {};

// Runs cpu.template operator()<T>() for float/double CPU tensors, and cuda() for float CUDA
// tensors. Ops without a CUDA kernel pass NoCuda and fail with NotImplementedError on CUDA.
template <class Cpu, class Cuda>
void dispatch(OpKind op, const Tensor& like, Cpu&& cpu, Cuda&& cuda) {
  if (like.device().is_cpu()) {
    switch (like.dtype()) {
      case DType::F32:
        cpu.template operator()<float>();
        return;
      case DType::F64:
        cpu.template operator()<double>();
        return;
      default:
        op_fail(op, "dtype {} is not supported on the CPU", dtype_name(like.dtype()));
    }
  }
  if constexpr (std::is_same_v<std::decay_t<Cuda>, NoCuda>) {
    throw NotImplementedError(op_where(op) + ": no CUDA kernel in this build yet (tensor on " +
                              like.device().str() + ")");
  } else {
    if (like.dtype() != DType::F32) {
      op_fail(op, "CUDA kernels take float32, got {}", dtype_name(like.dtype()));
    }
    cuda();
  }
}

// Typed element pointer; nullptr for an undefined (optional) tensor.
template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace pb::ops::detail

// A CUDA kernel call in an op file: compiled into the CUDA build, NoCuda in the CPU-only one.
#ifdef PB_WITH_CUDA
#define PB_CUDA_KERNEL(...) [&] { __VA_ARGS__; }
#else
#define PB_CUDA_KERNEL(...) \
  ::pb::ops::detail::NoCuda {}
#endif
