#include "runtime/core/shape.h"

#include <fmt/format.h>

#include "runtime/core/error.h"

namespace pb {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims)) {}

Shape::Shape(std::span<const int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(kMaxDims)) {
    fail<ShapeError>("shape with {} dimensions: at most {} are supported", dims.size(), kMaxDims);
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) fail<ShapeError>("shape dimension {} is negative ({})", i, dims[i]);
    dims_[i] = dims[i];
  }
  ndim_ = static_cast<int>(dims.size());
}

int64_t Shape::dim(int i) const {
  const int j = i < 0 ? i + ndim_ : i;
  if (j < 0 || j >= ndim_) fail<ShapeError>("dimension {} out of range for shape {}", i, str());
  return dims_[static_cast<std::size_t>(j)];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[static_cast<std::size_t>(i)];
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return s + ")";
}

bool Shape::operator==(const Shape& other) const {
  if (ndim_ != other.ndim_) return false;
  for (int i = 0; i < ndim_; ++i) {
    if (dims_[static_cast<std::size_t>(i)] != other.dims_[static_cast<std::size_t>(i)]) {
      return false;
    }
  }
  return true;
}

}  // namespace pb
