#include "runtime/core/module_scope.h"

#include <utility>

namespace pb {
namespace {
thread_local std::string t_path;
}

ModuleScope::ModuleScope(std::string path) : previous_(std::exchange(t_path, std::move(path))) {}
ModuleScope::~ModuleScope() {
  t_path = std::move(previous_);
}

const std::string& current_module_path() {
  return t_path;
}

}  // namespace pb
