#pragma once
// Running a multi-tensor kernel of kernels/optim.h over (x, y) tensor pairs on the tensors'
// device: the list is built per scalar type (double or float on the CPU, float on CUDA) and the
// kernel gets the device scalar `scale` (a clip factor) without a host read.
#include <cstdint>

#include "kernels/optim.h"
#include "runtime/core/error.h"
#include "runtime/core/tensor.h"
#include "runtime/device/cuda_device.h"

namespace pb::optim {

// pairs_of.template operator()<T>() -> std::vector<kernels::TensorPair<T>>;
// cpu(count, pairs, scale) for T = double or float; cuda(stream, count, pairs, scale).
template <typename PairsOf, typename Cpu, typename Cuda>
void run_on_pairs(Device device, DType dtype, PairsOf&& pairs_of, const Tensor& scale, Cpu&& cpu,
                  [[maybe_unused]] Cuda&& cuda) {
  if (device.is_cpu()) {
    if (dtype == DType::F64) {
      const auto pairs = pairs_of.template operator()<double>();
      cpu(static_cast<int64_t>(pairs.size()), pairs.data(), scale.data<double>());
    } else {
      const auto pairs = pairs_of.template operator()<float>();
      cpu(static_cast<int64_t>(pairs.size()), pairs.data(), scale.data<float>());
    }
    return;
  }
#ifdef PB_WITH_CUDA
  const auto pairs = pairs_of.template operator()<float>();
  cuda(device::launch_stream(device), static_cast<int64_t>(pairs.size()), pairs.data(),
       scale.data<float>());
#else
  fail<NotImplementedError>("tensors on {} but playbook was built without CUDA", device.str());
#endif
}

}  // namespace pb::optim
