#pragma once
// The module whose forward (or backward) is running, for error messages:
//   "conv2d (layer1.0.conv1): input ... "
// nn::Module::operator() opens a ModuleScope with the module's dotted path; ops read it.
#include <string>

namespace pb {

class ModuleScope {
 public:
  explicit ModuleScope(std::string path);
  ~ModuleScope();
  ModuleScope(const ModuleScope&) = delete;
  ModuleScope& operator=(const ModuleScope&) = delete;

 private:
  std::string previous_;
};

// The innermost open scope's path; empty outside any module.
const std::string& current_module_path();

}  // namespace pb
