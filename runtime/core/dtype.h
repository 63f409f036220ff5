#pragma once
// Element types. float32 is the training type; float64 runs gradient checks; int32 holds labels
// and indices. The half types are reserved so that the type system has room for mixed
// precision; no kernel accepts them yet.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pb {

enum class DType : uint8_t { F32, F64, I32, F16, BF16 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::I32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "float32";
    case DType::F64:
      return "float64";
    case DType::I32:
      return "int32";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
  }
  return "?";
}

constexpr bool is_floating(DType t) {
  return t != DType::I32;
}

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::I32;
}

}  // namespace pb
