#pragma once
// A tensor shape of up to kMaxDims dimensions, stored inline.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace pb {

class Shape {
 public:
  static constexpr int kMaxDims = 5;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  // Dimension i, counting from the back when negative; throws ShapeError when out of range.
  int64_t dim(int i) const;
  int64_t numel() const;
  std::span<const int64_t> dims() const { return {dims_.data(), static_cast<std::size_t>(ndim_)}; }

  // "(2, 3, 8, 8)"
  std::string str() const;
  bool operator==(const Shape& other) const;

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

}  // namespace pb
