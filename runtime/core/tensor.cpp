#include "runtime/core/tensor.h"

#include <atomic>
#include <cmath>
#include <sstream>

#include "runtime/device/memory.h"

namespace pb {

// ---- Storage ------------------------------------------------------------------------------------

Storage::Storage(std::size_t nbytes, Device device)
    : data_(device::allocate(nbytes, device)), nbytes_(nbytes), device_(device) {}

Storage::Storage(void* data, std::size_t nbytes, Device device, std::function<void(void*)> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_(data_);
    return;
  }
  device::deallocate(data_, nbytes_, device_);
}

namespace {

uint64_t next_tensor_id() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, std::size_t offset,
                                      const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->offset = offset;
  impl->shape = shape;
  impl->dtype = dtype;
  impl->id = next_tensor_id();
  return impl;
}

template <typename T>
void fill_host(T* p, int64_t n, T value) {
  for (int64_t i = 0; i < n; ++i) p[i] = value;
}

}  // namespace

// ---- Tensor -------------------------------------------------------------------------------------

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw Error("use of an undefined tensor");
  return *impl_;
}

const Shape& Tensor::shape() const {
  return checked().shape;
}
DType Tensor::dtype() const {
  return checked().dtype;
}
Device Tensor::device() const {
  return checked().storage->device();
}
uint64_t Tensor::id() const {
  return checked().id;
}

void* Tensor::raw_data() const {
  const TensorImpl& impl = checked();
  return static_cast<char*>(impl.storage->data()) + impl.offset;
}

template <typename T>
T* Tensor::data() const {
  if (dtype() != dtype_of<T>()) {
    fail<ShapeError>("tensor of dtype {} accessed as {}", dtype_name(dtype()),
                     dtype_name(dtype_of<T>()));
  }
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;

bool Tensor::requires_grad() const {
  return checked().requires_grad;
}

Tensor& Tensor::set_requires_grad(bool on) {
  const TensorImpl& impl = checked();
  if (!impl.is_leaf) {
    fail(
        "set_requires_grad: only leaf tensors can change requires_grad (this one was produced "
        "by an op; use detach() first)");
  }
  if (on && !is_floating(impl.dtype)) {
    fail("set_requires_grad: {} tensors cannot require gradients", dtype_name(impl.dtype));
  }
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const {
  return checked().is_leaf;
}
Tensor Tensor::grad() const {
  return checked().grad;
}

void Tensor::set_grad(const Tensor& g) const {
  const TensorImpl& impl = checked();
  if (g.defined() && (g.shape() != impl.shape || g.dtype() != impl.dtype)) {
    fail<ShapeError>("set_grad: gradient {} {} does not match tensor {} {}", g.shape().str(),
                     dtype_name(g.dtype()), impl.shape.str(), dtype_name(impl.dtype));
  }
  impl_->grad = g;
}

Tensor Tensor::detach() const {
  const TensorImpl& impl = checked();
  return Tensor(make_impl(impl.storage, impl.offset, impl.shape, impl.dtype));
}

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor out = empty(shape(), TensorOptions{}.with_dtype(dtype()).with_device(target));
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), TensorOptions{}.with_dtype(dtype()).with_device(device()));
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) const {
  if (src.shape() != shape() || src.dtype() != dtype()) {
    fail<ShapeError>("copy_: source {} {} does not match destination {} {}", src.shape().str(),
                     dtype_name(src.dtype()), shape().str(), dtype_name(dtype()));
  }
  device::copy(raw_data(), device(), src.raw_data(), src.device(), nbytes());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> out(static_cast<std::size_t>(numel()));
  if (dtype() != dtype_of<T>()) {
    fail<ShapeError>("to_vector: tensor of dtype {} read as {}", dtype_name(dtype()),
                     dtype_name(dtype_of<T>()));
  }
  device::copy_to_host(out.data(), raw_data(), device(), nbytes());
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;

template <typename T>
T Tensor::item() const {
  if (numel() != 1) fail<ShapeError>("item: tensor of shape {} is not one element", shape().str());
  return to_vector<T>()[0];
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int32_t Tensor::item<int32_t>() const;

namespace {

template <typename T>
void print_elements(std::ostringstream& os, const std::vector<T>& v, const Shape& s, int dim,
                    int64_t offset, int64_t stride_of_dim) {
  constexpr int64_t kEdge = 3;  // elements shown at each end of a long dimension
  const int64_t n = s[dim];
  const int64_t inner = stride_of_dim / std::max<int64_t>(n, 1);
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge && i == kEdge) {
      os << "...";
      i = n - kEdge - 1;
      os << ", ";
      continue;
    }
    if (dim + 1 == s.ndim()) {
      os << v[static_cast<std::size_t>(offset + i)];
    } else {
      print_elements(os, v, s, dim + 1, offset + i * inner, inner);
    }
    if (i + 1 < n) os << ", ";
  }
  os << "]";
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(" << dtype_name(dtype()) << ", " << device().str() << ", shape " << shape().str();
  if (requires_grad()) os << ", requires_grad";
  os << ") ";
  auto body = [&](const auto& v) {
    if (ndim() == 0) {
      os << v[0];
    } else {
      print_elements(os, v, shape(), 0, 0, numel());
    }
  };
  os.precision(6);
  switch (dtype()) {
    case DType::F32:
      body(to_vector<float>());
      break;
    case DType::F64:
      body(to_vector<double>());
      break;
    case DType::I32:
      body(to_vector<int32_t>());
      break;
    default:
      os << "<" << dtype_name(dtype()) << " data>";
      break;
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.str();
}

// ---- factories ----------------------------------------------------------------------------------

Tensor empty(const Shape& shape, TensorOptions options) {
  if (options.dtype == DType::F16 || options.dtype == DType::BF16) {
    fail<NotImplementedError>("{} tensors are not supported yet", dtype_name(options.dtype));
  }
  const std::size_t nbytes = static_cast<std::size_t>(shape.numel()) * dtype_size(options.dtype);
  Tensor t(make_impl(std::make_shared<Storage>(nbytes, options.device), 0, shape, options.dtype));
  if (options.requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor zeros(const Shape& shape, TensorOptions options) {
  Tensor t = empty(shape, options);
  device::zero(t.raw_data(), t.nbytes(), t.device());
  return t;
}

Tensor ones(const Shape& shape, TensorOptions options) {
  return full(shape, 1.0, options);
}

Tensor full(const Shape& shape, double value, TensorOptions options) {
  // Filled on the host, then moved: factories are not on any hot path.
  const Device target = options.device;
  Tensor t =
      empty(shape, TensorOptions(options).with_device(Device::cpu()).with_requires_grad(false));
  switch (options.dtype) {
    case DType::F32:
      fill_host(t.data<float>(), t.numel(), static_cast<float>(value));
      break;
    case DType::F64:
      fill_host(t.data<double>(), t.numel(), value);
      break;
    case DType::I32:
      fill_host(t.data<int32_t>(), t.numel(), static_cast<int32_t>(value));
      break;
    default:
      break;
  }
  t = t.to(target);
  if (options.requires_grad) t.set_requires_grad(true);
  return t;
}

namespace {

template <typename Draw>
Tensor random_tensor(const Shape& shape, TensorOptions options, Draw draw) {
  if (!is_floating(options.dtype)) {
    fail("random tensors must be floating point, got {}", dtype_name(options.dtype));
  }
  const Device target = options.device;
  Tensor t =
      empty(shape, TensorOptions(options).with_device(Device::cpu()).with_requires_grad(false));
  if (options.dtype == DType::F32) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(draw());
  } else {
    double* p = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = draw();
  }
  t = t.to(target);
  if (options.requires_grad) t.set_requires_grad(true);
  return t;
}

}  // namespace

Tensor uniform(const Shape& shape, double low, double high, Generator& gen, TensorOptions options) {
  if (!(low < high)) fail("uniform: low ({}) must be below high ({})", low, high);
  return random_tensor(shape, options, [&] {
    return low + (high - low) * static_cast<double>(gen.next_u64() >> 11) * 0x1.0p-53;
  });
}

Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen,
              TensorOptions options) {
  if (!(stddev >= 0)) fail("normal: stddev must be >= 0, got {}", stddev);
  return random_tensor(shape, options, [&] { return mean + stddev * gen.normal(); });
}

template <typename T>
Tensor from_vector(std::span<const T> values, const Shape& shape, TensorOptions options) {
  if (static_cast<int64_t>(values.size()) != shape.numel()) {
    fail<ShapeError>("from_vector: {} values for shape {} ({} elements)", values.size(),
                     shape.str(), shape.numel());
  }
  options.dtype = dtype_of<T>();
  const bool wants_grad = options.requires_grad;
  Tensor t = empty(shape, TensorOptions(options).with_requires_grad(false));
  device::copy(t.raw_data(), t.device(), values.data(), Device::cpu(), t.nbytes());
  if (wants_grad) t.set_requires_grad(true);
  return t;
}
template Tensor from_vector<float>(std::span<const float>, const Shape&, TensorOptions);
template Tensor from_vector<double>(std::span<const double>, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(std::span<const int32_t>, const Shape&, TensorOptions);

Tensor empty_like(const Tensor& t) {
  return empty(t.shape(), TensorOptions{}.with_dtype(t.dtype()).with_device(t.device()));
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), TensorOptions{}.with_dtype(t.dtype()).with_device(t.device()));
}

Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  const std::size_t nbytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  if (!storage || storage->nbytes() < nbytes) {
    fail("from_storage: {} {} needs {} bytes, the storage holds {}", shape.str(), dtype_name(dtype),
         nbytes, storage ? storage->nbytes() : 0);
  }
  return Tensor(make_impl(std::move(storage), 0, shape, dtype));
}

}  // namespace pb
