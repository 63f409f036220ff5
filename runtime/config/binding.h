#pragma once
// Binding a struct's fields to config keys, so a setting is declared once: the key's spec (type,
// default, range, aliases, doc) and the field it fills are one statement, and reading a validated
// Config into the struct is a loop over the bindings, not a copy per field:
//
//   struct LoaderSettings { int64_t batch_size; bool shuffle; };
//   config::Binder<LoaderSettings> binder;
//   binder.bind(schema, &LoaderSettings::batch_size, "train.batch_size", 128, "examples per step")
//       .at_least(1);
//   ...
//   LoaderSettings s = binder.read(config);
//
// The struct's fields carry no defaults of their own: the spec's default is the only one.
// Field types and the key type they declare: bool (Bool); int, int64_t, uint64_t (Int; uint64_t
// also gets at_least(0)); double (Float); std::string, std::filesystem::path (String);
// std::vector<int64_t> (IntList), std::vector<double> (FloatList), std::vector<std::string>
// (StringList).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/config/config.h"

namespace pb::config {

template <typename S>
class Binder {
 public:
  template <typename F, typename D>
  KeySpec& bind(Schema& schema, F S::*field, std::string key, D default_value, std::string doc) {
    KeySpec* spec = nullptr;
    if constexpr (std::is_same_v<F, bool>) {
      spec = &schema.add_bool(std::move(key), static_cast<bool>(default_value), std::move(doc));
      readers_.push_back(
          [field, k = spec->key](const Config& c, S& s) { s.*field = c.get<bool>(k); });
    } else if constexpr (std::is_integral_v<F>) {
      spec = &schema.add_int(std::move(key), static_cast<int64_t>(default_value), std::move(doc));
      if constexpr (std::is_unsigned_v<F>) spec->at_least(0);
      readers_.push_back([field, k = spec->key](const Config& c, S& s) {
        s.*field = static_cast<F>(c.get<int64_t>(k));
      });
    } else if constexpr (std::is_floating_point_v<F>) {
      spec = &schema.add_float(std::move(key), static_cast<double>(default_value), std::move(doc));
      readers_.push_back([field, k = spec->key](const Config& c, S& s) {
        s.*field = static_cast<F>(c.get<double>(k));
      });
    } else if constexpr (std::is_same_v<F, std::string> ||
                         std::is_same_v<F, std::filesystem::path>) {
      spec = &schema.add_string(std::move(key), std::string(default_value), std::move(doc));
      readers_.push_back(
          [field, k = spec->key](const Config& c, S& s) { s.*field = F(c.get<std::string>(k)); });
    } else if constexpr (std::is_same_v<F, std::vector<int64_t>>) {
      spec = &schema.add_int_list(std::move(key), F(default_value), std::move(doc));
      readers_.push_back([field, k = spec->key](const Config& c, S& s) { s.*field = c.get<F>(k); });
    } else if constexpr (std::is_same_v<F, std::vector<double>>) {
      spec = &schema.add_float_list(std::move(key), F(default_value), std::move(doc));
      readers_.push_back([field, k = spec->key](const Config& c, S& s) { s.*field = c.get<F>(k); });
    } else if constexpr (std::is_same_v<F, std::vector<std::string>>) {
      spec = &schema.add_string_list(std::move(key), F(default_value), std::move(doc));
      readers_.push_back([field, k = spec->key](const Config& c, S& s) { s.*field = c.get<F>(k); });
    } else {
      static_assert(sizeof(F) == 0, "Binder::bind: unsupported field type");
    }
    return *spec;
  }

  // The struct filled from a Config of a schema that holds every bound key.
  S read(const Config& config) const {
    S s{};
    for (const auto& reader : readers_) reader(config, s);
    return s;
  }

 private:
  std::vector<std::function<void(const Config&, S&)>> readers_;
};

}  // namespace pb::config
