#pragma once
// Schema-driven TOML configuration: what `playbook train CONFIG.toml --set section.key=value`
// reads.
//
// A Schema declares every key as `section.key` with a type, a default (or none: required), an
// optional numeric range, an optional set of allowed strings and a one-line doc. load() parses
// the file, applies the overrides and validates everything against the schema; each problem is
// a one-line ConfigError naming its source and key:
//   configs/x.toml: unknown key 'optimizer.learing_rate' (did you mean
//   'optimizer.learning_rate'?)
//   --set optimizer.momentum=1.5: optimizer.momentum must be in [0, 1), got 1.5
// Config::to_toml() writes the fully resolved config (every key, each with its doc as a comment);
// loading that text again with the same schema gives the same values.
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/core/error.h"

namespace pb::config {

// A malformed config, a bad override or a value the schema rejects. One line, naming the file
// (or the override) and the key.
class ConfigError : public pb::Error {
 public:
  using pb::Error::Error;
};

enum class Type { Bool, Int, Float, String, IntList, FloatList, StringList };

// "a bool", "an int", "a float", "a string", "a list of ints", ...
std::string_view type_name(Type type);

// A resolved value; the alternative always matches the key's Type (a Float key holds a double
// even where the file wrote an integer).
using Value = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                           std::vector<double>, std::vector<std::string>>;

// The TOML spelling of a value: true, 3, 0.1, 1.0, "sgd", [1, 2], ["a", "b"].
std::string format_value(const Value& value);

// Where a resolved value came from.
enum class Source { Default, File, Override };

// One end of a numeric range.
struct Bound {
  double value = 0;
  bool inclusive = true;
};

// One declared key. Built by Schema::add_*; the range/allowed setters chain:
//   schema.add_float("optimizer.momentum", 0.9, "Momentum").at_least(0).less_than(1);
struct KeySpec {
  std::string key;  // "section.key"
  Type type = Type::Float;
  std::optional<Value> default_value;  // none: the key is required
  std::string doc;
  std::optional<Bound> lower;  // numeric keys and lists of numbers (every element)
  std::optional<Bound> upper;
  std::vector<std::string> allowed;  // strings and lists of strings; empty: anything

  bool required() const { return !default_value.has_value(); }
  std::string_view section() const;  // "optimizer"
  std::string_view name() const;     // "learning_rate"

  KeySpec& at_least(double v);      // value >= v
  KeySpec& greater_than(double v);  // value > v
  KeySpec& at_most(double v);       // value <= v
  KeySpec& less_than(double v);     // value < v
  KeySpec& one_of(std::vector<std::string> values);

  // "[0, 1)", ">= 1", "> 0"...; empty when there is no range.
  std::string range_str() const;
};

// The declared keys, in declaration order (which is also the order of to_toml()).
// A default of std::nullopt makes the key required.
class Schema {
 public:
  KeySpec& add_bool(std::string key, std::optional<bool> default_value, std::string doc);
  KeySpec& add_int(std::string key, std::optional<int64_t> default_value, std::string doc);
  KeySpec& add_float(std::string key, std::optional<double> default_value, std::string doc);
  KeySpec& add_string(std::string key, std::optional<std::string> default_value, std::string doc);
  KeySpec& add_int_list(std::string key, std::optional<std::vector<int64_t>> default_value,
                        std::string doc);
  KeySpec& add_float_list(std::string key, std::optional<std::vector<double>> default_value,
                          std::string doc);
  KeySpec& add_string_list(std::string key, std::optional<std::vector<std::string>> default_value,
                           std::string doc);

  // The spec of a key, or nullptr when it is not declared.
  const KeySpec* find(std::string_view key) const;
  const std::deque<KeySpec>& keys() const { return keys_; }
  // Section names in order of first declaration.
  std::vector<std::string> sections() const;
  // Throws ConfigError ("schema: ...") when a default does not satisfy its own range or allowed
  // values. load() calls it.
  void check() const;

 private:
  KeySpec& add(std::string key, Type type, std::optional<Value> default_value, std::string doc);
  std::deque<KeySpec> keys_;  // a deque keeps the references add_* return valid
};

// A validated configuration: one value per declared key.
class Config {
 public:
  Config(Schema schema, std::vector<Value> values, std::vector<Source> sources);

  // Typed access. T is bool, int64_t, double, std::string, std::vector<int64_t>,
  // std::vector<double> or std::vector<std::string> and must match the key's type; an undeclared
  // key or a mismatched T is a programming error and throws ConfigError naming the key.
  // Returns a copy, so reading from a temporary Config is safe.
  template <typename T>
  T get(std::string_view key) const;
  const Value& value(std::string_view key) const;
  Source source(std::string_view key) const;
  bool has(std::string_view key) const { return schema_.find(key) != nullptr; }

  // Every declared key ("optimizer.learning_rate"), in declaration order.
  std::vector<std::string> keys() const;
  // The full keys of one section ("optimizer.learning_rate", "optimizer.momentum", ...), in
  // declaration order; empty for an unknown section.
  std::vector<std::string> section_keys(std::string_view section) const;
  const Schema& schema() const { return schema_; }

  // The fully resolved config as TOML: every key, defaults included, each under its section and
  // below its doc as a comment. This is a run directory's config.toml.
  std::string to_toml() const;

 private:
  std::size_t index(std::string_view key) const;
  Schema schema_;
  std::vector<Value> values_;  // parallel to schema_.keys()
  std::vector<Source> sources_;
};

// Reads `file`, applies `overrides` ("section.key=value", the argument of one --set each, later
// ones win) and validates the result against `schema`.
Config load(const std::filesystem::path& file, const Schema& schema,
            const std::vector<std::string>& overrides = {});
// The same for TOML text in memory; `source_name` stands for the file in messages.
Config parse(std::string_view text, std::string_view source_name, const Schema& schema,
             const std::vector<std::string>& overrides = {});

// The candidate closest to `word` by optimal-string-alignment (Damerau-Levenshtein) distance,
// ignoring case, when it is close enough to be a likely typo; empty otherwise. Ties go to the
// earlier candidate.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);
// " (did you mean 'x'?)" or "" — ready to append to a message.
std::string did_you_mean_hint(std::string_view word, const std::vector<std::string>& candidates);
// The edit distance behind did_you_mean (case-sensitive; adjacent transpositions cost 1).
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace pb::config
