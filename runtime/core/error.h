#pragma once
// Exceptions raised by the runtime. Messages say what was wrong and where, so a user can act:
//   "conv2d (layer1.0.conv1): input (2,3,8,8) has 3 channels, weight (16,1,3,3) expects 1"
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace pb {

// Base of every playbook error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Shapes, dtypes or devices of an op's inputs do not fit together.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An argument is out of range or otherwise invalid (a negative stride, p >= 1 for dropout...).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A feature exists in the design but not for this device/dtype yet.
class NotImplementedError : public Error {
 public:
  using Error::Error;
};

template <typename E = ValueError, typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace pb
