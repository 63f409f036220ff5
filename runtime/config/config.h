#pragma once
// Schema-driven TOML configuration: what `playbook train CONFIG.toml --set section.key=value`
// reads.
//
// A Schema declares every key as `section.key` with a type, a default (or none: required), an
// optional numeric range, an optional set of allowed strings, aliases (other spellings accepted
// on input: "optimizer.lr" for "optimizer.learning_rate") and a one-line doc. This KeySpec is the
// one description of a hyperparameter in playbook: the optimizer, schedule, clipping and EMA
// registries publish theirs as KeySpecs too, and resolve_numbers() checks a map of values given
// through the C++ API against them with the same rules and messages as a TOML file.
//
// Choice sections. A key declared with Schema::add_choice ("optimizer.name") selects one entry of
// a table of key lists: only the chosen entry's keys exist in the resolved config, each with the
// chosen entry's own default (rmsprop's momentum defaults to 0, momentum's to 0.9; lamb's epsilon
// to 1e-6, adam's to 1e-8). A key of another entry is an error naming the choice:
//   --set optimizer.beta2=0.99: optimizer.beta2 does not apply to optimizer 'momentum' (it
//   takes: learning_rate, momentum, weight_decay, no_decay_1d)
// So a value the user writes is always the value used, and to_toml() lists exactly the keys and
// values that ran. load() parses
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
class ConfigError : public pb::ValueError {
 public:
  using pb::ValueError::ValueError;
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
// Derived: filled in from other keys after loading (schedule.decay_steps = 0 resolved to the
// steps left after warmup), so that to_toml() shows the value that ran.
enum class Source { Default, File, Override, Derived };

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
  // Other spellings accepted on input: a bare name ("lr") means the same section, a dotted one
  // ("train.clip_norm") is a full key. Messages and to_toml() use `key`.
  std::vector<std::string> aliases;

  bool required() const { return !default_value.has_value(); }
  std::string_view section() const;  // "optimizer" ("" for a bare name)
  std::string_view name() const;     // "learning_rate"

  KeySpec& at_least(double v);      // value >= v
  KeySpec& greater_than(double v);  // value > v
  KeySpec& at_most(double v);       // value <= v
  KeySpec& less_than(double v);     // value < v
  KeySpec& one_of(std::vector<std::string> values);
  KeySpec& alias(std::string name);
  // Whether `key` (a full key) names this spec, directly or through an alias.
  bool matches(std::string_view key) const;

  // "[0, 1)", ">= 1", "> 0"...; empty when there is no range.
  std::string range_str() const;
};

// A spec with a bare name ("momentum") and no section, for registries that publish their
// hyperparameters before anyone places them in a section: make_key("momentum", Type::Float, 0.9,
// "gamma").at_least(0).less_than(1).
KeySpec make_key(std::string name, Type type, std::optional<Value> default_value, std::string doc);

// One entry of a choice section: the selector's value and the keys it brings (bare names).
struct Choice {
  std::string value;          // "adam"
  std::vector<KeySpec> keys;  // "learning_rate", "beta1", ...
};

// The declared keys, in declaration order (which is also the order of to_toml()).
// A default of std::nullopt makes the key required.
class Schema {
 public:
  // Adds a copy of `spec` under `section` (its bare name becomes "section.name").
  KeySpec& add_in(std::string_view section, const KeySpec& spec);
  // A string key ("optimizer.name") whose value picks one of `choices`; the chosen entry's keys
  // follow it in the resolved schema (see "Choice sections" above).
  KeySpec& add_choice(std::string key, std::string default_value, std::string doc,
                      std::vector<Choice> choices);
  // The schema a config with these selector values has: every plain key, and after each
  // selector the keys of its chosen entry. `chosen` maps selector keys to values; a selector
  // missing from it takes its default. Throws ConfigError for a value that is not a choice.
  Schema resolve_choices(const std::map<std::string, std::string>& chosen) const;
  bool has_choices() const { return !choices_.empty(); }
  // Whether `key` is a choice selector declared by add_choice.
  bool is_selector(std::string_view key) const { return choice_set(key) != nullptr; }
  // A spec of `key` under any choice (the first entry that declares it), or a plain one; nullptr
  // when nothing declares it. For tools that validate keys before a choice is known (a study's
  // search space); the key's range can differ between choices only where their specs differ.
  const KeySpec* find_any(std::string_view key) const;
  // For a key that only some entries of a choice declare and the chosen one does not:
  // "optimizer.beta2 does not apply to optimizer 'momentum' (it takes: learning_rate, momentum,
  // ...)"; else "".
  std::string not_applicable(std::string_view key,
                             const std::map<std::string, std::string>& chosen) const;
  // The entries of a choice selector that declare `key` ("adam", "nadam", ...).
  std::vector<std::string> choices_declaring(std::string_view selector, std::string_view key) const;

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

  // The spec of a key (or of one of its aliases), or nullptr when it is not declared.
  const KeySpec* find(std::string_view key) const;
  const std::deque<KeySpec>& keys() const { return keys_; }
  // Section names in order of first declaration.
  std::vector<std::string> sections() const;
  // Throws ConfigError ("schema: ...") when a default does not satisfy its own range or allowed
  // values. load() calls it.
  void check() const;

 private:
  KeySpec& add(std::string key, Type type, std::optional<Value> default_value, std::string doc);
  struct ChoiceSet {
    std::string selector;         // "optimizer.name"
    std::vector<Choice> choices;  // keys with full names ("optimizer.beta1")
  };
  const ChoiceSet* choice_set(std::string_view selector) const;
  std::deque<KeySpec> keys_;  // a deque keeps the references add_* return valid
  std::vector<ChoiceSet> choices_;
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

  // Replaces the value of `key` by one derived from other keys (checked against the spec), with
  // Source::Derived.
  void set_derived(std::string_view key, Value value);

  // The numbers (and bools, as 0 / 1) of one section by bare name: what the optimizer,
  // schedule, clipping and EMA factories take. Lists and strings are left out.
  std::map<std::string, double> section_numbers(std::string_view section) const;

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

// Checks a value whose type matches `spec` against its range and allowed values; `source`
// starts the message ("--set x=1", "optimizer adam").
void check_value(const KeySpec& spec, const Value& value, std::string_view source);

// Resolution of a map of numbers given through the C++ API (the optimizer, schedule, clipping
// and EMA factories take these) against bare-named specs: every spec'd name with its given or
// default value. Int keys must be whole numbers, Bool keys 0 or 1; the same range checks as
// parse(). `what` names the owner ("optimizer adam"). Throws ConfigError for an unknown name
// (with a did-you-mean, aliases included), a missing required value or a bad value:
//   "optimizer adam: beta2 must be in [0, 1), got 1.5"
std::map<std::string, double> resolve_numbers(std::string_view what,
                                              const std::vector<KeySpec>& specs,
                                              const std::map<std::string, double>& given);

// "'a', 'b', 'c'" for messages.
std::string quoted_list(const std::vector<std::string>& names);

// The candidate closest to `word` by optimal-string-alignment (Damerau-Levenshtein) distance,
// ignoring case, when it is close enough to be a likely typo; empty otherwise. Ties go to the
// earlier candidate.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);
// " (did you mean 'x'?)" or "" — ready to append to a message.
std::string did_you_mean_hint(std::string_view word, const std::vector<std::string>& candidates);
// The edit distance behind did_you_mean (case-sensitive; adjacent transpositions cost 1).
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace pb::config
