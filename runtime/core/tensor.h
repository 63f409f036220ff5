#pragma once
// Tensor: a shape, a dtype and a device over reference-counted contiguous storage, plus the
// autograd state (requires_grad, grad, leaf or op output). Copies of a Tensor share the same
// underlying tensor (like torch.Tensor handles); clone() makes a new one.
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"
#include "runtime/core/random.h"
#include "runtime/core/shape.h"

namespace pb {

// Reference-counted memory on one device, freed when the last tensor using it goes away.
class Storage {
 public:
  Storage(std::size_t nbytes, Device device);
  // Adopts nbytes at `data` on `device`, owned elsewhere: `release(data)` runs instead of the
  // deallocation when the last tensor goes away (pooled pinned batches, copy-stream buffers).
  Storage(void* data, std::size_t nbytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;  // adopted memory only
};

struct TensorOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
  bool requires_grad = false;

  TensorOptions& with_dtype(DType d) { return dtype = d, *this; }
  TensorOptions& with_device(Device d) { return device = d, *this; }
  TensorOptions& with_requires_grad(bool r = true) { return requires_grad = r, *this; }
};

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // undefined: holds nothing
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int ndim() const { return shape().ndim(); }
  int64_t dim(int i) const { return shape().dim(i); }
  int64_t numel() const { return shape().numel(); }
  DType dtype() const;
  Device device() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype()); }
  // A process-unique id: never reused, so it can key per-tensor maps safely.
  uint64_t id() const;

  // Typed access to the elements; throws when T does not match dtype().
  template <typename T>
  T* data() const;
  void* raw_data() const;

  // ---- autograd ------------------------------------------------------------------------------
  bool requires_grad() const;
  // Only leaves (tensors not produced by a recorded op) may change requires_grad.
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const;
  // The gradient accumulated into a leaf by backward(); undefined until then.
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  // Backpropagates from this scalar (gradient 1) through the tape; see runtime/autograd/tape.h.
  void backward() const;
  // Same storage, cut from the tape, requires_grad false.
  Tensor detach() const;

  // ---- views and copies ---------------------------------------------------------------------
  // Same elements in a new shape (one dimension may be -1); an op on the tape.
  Tensor reshape(std::vector<int64_t> dims) const;
  // Keeps dims [0, start_dim) and merges the rest: (N,C,H,W).flatten(1) -> (N,C*H*W).
  Tensor flatten(int start_dim = 1) const;
  // A new tensor with a copy of the data on `device` (or this tensor if already there).
  Tensor to(Device device) const;
  Tensor clone() const;
  // Copies src's elements into this tensor (same shape and dtype, any devices). Not recorded.
  void copy_(const Tensor& src) const;
  // Elements as a host vector (copied from the device when needed).
  template <typename T>
  std::vector<T> to_vector() const;
  // The value of a one-element tensor.
  template <typename T>
  T item() const;

  // "tensor(float32, cpu, shape (2, 3)) [[1, 2, 3], [4, 5, 6]]" with long dimensions elided.
  std::string str() const;

  TensorImpl* impl() const { return impl_.get(); }

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories ----------------------------------------------------------------------------------
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
// Uniform on [low, high) and normal(mean, stddev), drawn on the host from `gen`.
Tensor uniform(const Shape& shape, double low, double high, Generator& gen,
               TensorOptions options = {});
Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen,
              TensorOptions options = {});
// A tensor holding a copy of host values (values.size() must equal shape.numel()).
template <typename T>
Tensor from_vector(std::span<const T> values, const Shape& shape, TensorOptions options = {});
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions options = {}) {
  return from_vector<T>(std::span<const T>(values), shape, options);
}
Tensor empty_like(const Tensor& t);
// A tensor of `shape` and `dtype` over the start of `storage` (which must hold its bytes).
Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype);
Tensor zeros_like(const Tensor& t);

// The internals behind a Tensor handle.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  std::size_t offset = 0;  // bytes from storage->data()
  Shape shape;
  DType dtype = DType::F32;
  uint64_t id = 0;
  // autograd
  bool requires_grad = false;
  bool is_leaf = true;
  Tensor grad;
};

}  // namespace pb
