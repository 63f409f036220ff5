#pragma once
// Lookups shared by the registries of this folder (optimizers, schedules): entries are found by
// name, and an unknown name is a ConfigError with a did-you-mean and the known names.
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/config.h"

namespace pb::optim {

template <typename Info>
std::vector<std::string> entry_names(const std::vector<Info>& registry) {
  std::vector<std::string> names;
  for (const Info& info : registry) names.push_back(info.name);
  return names;
}

// `what` names the kind of entry in the message: "unknown optimizer 'adma' (did you mean
// 'adam'?); known optimizers: 'sgd', ...".
template <typename Info>
const Info& find_entry(const std::vector<Info>& registry, std::string_view name,
                       std::string_view what) {
  for (const Info& info : registry) {
    if (info.name == name) return info;
  }
  const std::vector<std::string> names = entry_names(registry);
  fail<config::ConfigError>("unknown {} '{}'{}; known {}s: {}", what, name,
                            config::did_you_mean_hint(name, names), what,
                            config::quoted_list(names));
}

}  // namespace pb::optim
