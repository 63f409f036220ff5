#include "runtime/config/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace pb::config {

// ---- names and formatting -----------------------------------------------------------------------

std::string_view type_name(Type type) {
  switch (type) {
    case Type::Bool:
      return "a bool";
    case Type::Int:
      return "an int";
    case Type::Float:
      return "a float";
    case Type::String:
      return "a string";
    case Type::IntList:
      return "a list of ints";
    case Type::FloatList:
      return "a list of floats";
    case Type::StringList:
      return "a list of strings";
  }
  return "?";
}

namespace {

// Shortest text that reads back as the same double, always spelled as a TOML float ("1.0", not
// "1", which TOML would read as an integer).
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

// A TOML basic string: "..." with the escapes TOML requires.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04X}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

template <typename T, typename F>
std::string join(const std::vector<T>& items, F&& format_one) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += format_one(items[i]);
  }
  return out + "]";
}

std::string format_number(double v) {
  return fmt::format("{}", v);
}

}  // namespace

std::string format_value(const Value& value) {
  struct Visitor {
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(int64_t v) const { return fmt::format("{}", v); }
    std::string operator()(double v) const { return format_double(v); }
    std::string operator()(const std::string& v) const { return quote(v); }
    std::string operator()(const std::vector<int64_t>& v) const {
      return join(v, [](int64_t x) { return fmt::format("{}", x); });
    }
    std::string operator()(const std::vector<double>& v) const {
      return join(v, [](double x) { return format_double(x); });
    }
    std::string operator()(const std::vector<std::string>& v) const {
      return join(v, [](const std::string& x) { return quote(x); });
    }
  };
  return std::visit(Visitor{}, value);
}

// ---- did you mean -------------------------------------------------------------------------------

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and transpositions of
  // adjacent characters each cost 1. d is (a.size()+1) x (b.size()+1), row-major.
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::size_t> d((n + 1) * (m + 1));
  auto at = [&](std::size_t i, std::size_t j) -> std::size_t& { return d[i * (m + 1) + j]; };
  for (std::size_t i = 0; i <= n; ++i) at(i, 0) = i;
  for (std::size_t j = 0; j <= m; ++j) at(0, j) = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      std::size_t best = std::min({at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        best = std::min(best, at(i - 2, j - 2) + 1);
      }
      at(i, j) = best;
    }
  }
  return at(n, m);
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// How many edits still look like a typo of a word of this length: short words allow one, longer
// ones up to three ("sdg" -> "sgd", "learing_rate" -> "learning_rate", but never "lr" -> "wd").
std::size_t typo_threshold(std::size_t length) {
  return std::max<std::size_t>(1, std::min<std::size_t>(3, length / 3));
}

// Index of the first candidate at the smallest distance, if that is within `threshold`.
std::optional<std::size_t> closest(std::string_view word,
                                   const std::vector<std::string>& candidates,
                                   std::size_t threshold) {
  const std::string w = lower(word);
  std::optional<std::size_t> best;
  std::size_t best_distance = threshold + 1;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::string c = lower(candidates[i]);
    std::size_t dist = edit_distance(w, c);
    // A long shared beginning is a near miss too: "boundary" for "boundaries", "learning" for
    // "learning_rate".
    std::size_t common = 0;
    while (common < w.size() && common < c.size() && w[common] == c[common]) ++common;
    if (common >= 5 && common + 2 >= w.size()) dist = std::min(dist, threshold);
    if (dist < best_distance) {
      best_distance = dist;
      best = i;
    }
  }
  return best;
}

std::optional<std::size_t> closest(std::string_view word,
                                   const std::vector<std::string>& candidates) {
  return closest(word, candidates, typo_threshold(word.size()));
}

}  // namespace

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  const auto i = closest(word, candidates);
  return i ? candidates[*i] : std::string();
}

std::string did_you_mean_hint(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string s = did_you_mean(word, candidates);
  return s.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", s);
}

// ---- KeySpec and Schema -------------------------------------------------------------------------

std::string_view KeySpec::section() const {
  const std::size_t dot = key.find('.');
  return dot == std::string::npos ? std::string_view() : std::string_view(key).substr(0, dot);
}

std::string_view KeySpec::name() const {
  const std::size_t dot = key.find('.');
  return dot == std::string::npos ? std::string_view(key) : std::string_view(key).substr(dot + 1);
}

KeySpec& KeySpec::alias(std::string name) {
  aliases.push_back(std::move(name));
  return *this;
}

bool KeySpec::matches(std::string_view full) const {
  if (full == key) return true;
  for (const std::string& a : aliases) {
    if (a.find('.') != std::string::npos ? full == a
        : section().empty()
            ? full == a
            : full.size() == section().size() + 1 + a.size() && full.starts_with(section()) &&
                  full[section().size()] == '.' && full.ends_with(a)) {
      return true;
    }
  }
  return false;
}

KeySpec make_key(std::string name, Type type, std::optional<Value> default_value, std::string doc) {
  KeySpec spec;
  spec.key = std::move(name);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.doc = std::move(doc);
  return spec;
}

namespace {

bool is_numeric(Type t) {
  return t == Type::Int || t == Type::Float || t == Type::IntList || t == Type::FloatList;
}

bool is_stringy(Type t) {
  return t == Type::String || t == Type::StringList;
}

void require_numeric(const KeySpec& spec, std::string_view what) {
  if (!is_numeric(spec.type)) {
    fail<ConfigError>("schema: {} on {}, which is {}: only numbers have a range", what, spec.key,
                      type_name(spec.type));
  }
}

}  // namespace

KeySpec& KeySpec::at_least(double v) {
  require_numeric(*this, "at_least");
  lower = Bound{v, true};
  return *this;
}
KeySpec& KeySpec::greater_than(double v) {
  require_numeric(*this, "greater_than");
  lower = Bound{v, false};
  return *this;
}
KeySpec& KeySpec::at_most(double v) {
  require_numeric(*this, "at_most");
  upper = Bound{v, true};
  return *this;
}
KeySpec& KeySpec::less_than(double v) {
  require_numeric(*this, "less_than");
  upper = Bound{v, false};
  return *this;
}
KeySpec& KeySpec::one_of(std::vector<std::string> values) {
  if (!is_stringy(type)) {
    fail<ConfigError>("schema: one_of on {}, which is {}: only strings have allowed values", key,
                      type_name(type));
  }
  if (values.empty()) fail<ConfigError>("schema: one_of on {} with no values", key);
  allowed = std::move(values);
  return *this;
}

std::string KeySpec::range_str() const {
  if (lower && upper) {
    return fmt::format("in {}{}, {}{}", lower->inclusive ? '[' : '(', format_number(lower->value),
                       format_number(upper->value), upper->inclusive ? ']' : ')');
  }
  if (lower)
    return fmt::format("{} {}", lower->inclusive ? ">=" : ">", format_number(lower->value));
  if (upper)
    return fmt::format("{} {}", upper->inclusive ? "<=" : "<", format_number(upper->value));
  return {};
}

namespace {

bool is_bare_key(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

}  // namespace

KeySpec& Schema::add(std::string key, Type type, std::optional<Value> default_value,
                     std::string doc) {
  const std::size_t dot = key.find('.');
  if (dot == std::string::npos || !is_bare_key(std::string_view(key).substr(0, dot)) ||
      !is_bare_key(std::string_view(key).substr(dot + 1))) {
    fail<ConfigError>(
        "schema: key '{}' must be 'section.key' (letters, digits, '_' and '-' on each side)", key);
  }
  if (find(key)) fail<ConfigError>("schema: key '{}' is declared twice", key);
  KeySpec& spec = keys_.emplace_back();
  spec.key = std::move(key);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.doc = std::move(doc);
  return spec;
}

KeySpec& Schema::add_bool(std::string key, std::optional<bool> default_value, std::string doc) {
  return add(std::move(key), Type::Bool,
             default_value ? std::optional<Value>(*default_value) : std::nullopt, std::move(doc));
}
KeySpec& Schema::add_int(std::string key, std::optional<int64_t> default_value, std::string doc) {
  return add(std::move(key), Type::Int,
             default_value ? std::optional<Value>(*default_value) : std::nullopt, std::move(doc));
}
KeySpec& Schema::add_float(std::string key, std::optional<double> default_value, std::string doc) {
  return add(std::move(key), Type::Float,
             default_value ? std::optional<Value>(*default_value) : std::nullopt, std::move(doc));
}
KeySpec& Schema::add_string(std::string key, std::optional<std::string> default_value,
                            std::string doc) {
  return add(std::move(key), Type::String,
             default_value ? std::optional<Value>(std::move(*default_value)) : std::nullopt,
             std::move(doc));
}
KeySpec& Schema::add_int_list(std::string key, std::optional<std::vector<int64_t>> default_value,
                              std::string doc) {
  return add(std::move(key), Type::IntList,
             default_value ? std::optional<Value>(std::move(*default_value)) : std::nullopt,
             std::move(doc));
}
KeySpec& Schema::add_float_list(std::string key, std::optional<std::vector<double>> default_value,
                                std::string doc) {
  return add(std::move(key), Type::FloatList,
             default_value ? std::optional<Value>(std::move(*default_value)) : std::nullopt,
             std::move(doc));
}
KeySpec& Schema::add_string_list(std::string key,
                                 std::optional<std::vector<std::string>> default_value,
                                 std::string doc) {
  return add(std::move(key), Type::StringList,
             default_value ? std::optional<Value>(std::move(*default_value)) : std::nullopt,
             std::move(doc));
}

const KeySpec* Schema::find(std::string_view key) const {
  for (const KeySpec& spec : keys_) {
    if (spec.key == key) return &spec;
  }
  for (const KeySpec& spec : keys_) {
    if (spec.matches(key)) return &spec;
  }
  return nullptr;
}

KeySpec& Schema::add_in(std::string_view section, const KeySpec& spec) {
  if (spec.key.find('.') != std::string::npos) {
    fail<ConfigError>("schema: '{}' is already a full key; add_in takes bare names", spec.key);
  }
  KeySpec& added =
      add(fmt::format("{}.{}", section, spec.key), spec.type, spec.default_value, spec.doc);
  const std::string key = added.key;
  added = spec;
  added.key = key;
  return added;
}

KeySpec& Schema::add_choice(std::string key, std::string default_value, std::string doc,
                            std::vector<Choice> choices) {
  std::vector<std::string> values;
  for (const Choice& c : choices) values.push_back(c.value);
  KeySpec& selector = add_string(key, std::move(default_value), std::move(doc));
  selector.one_of(values);
  ChoiceSet set{key, std::move(choices)};
  for (Choice& c : set.choices) {
    for (KeySpec& spec : c.keys) {
      if (spec.key.find('.') != std::string::npos) {
        fail<ConfigError>("schema: choice '{}' of {}: key '{}' must be a bare name", c.value, key,
                          spec.key);
      }
      spec.key = fmt::format("{}.{}", selector.section(), spec.key);
      if (find(spec.key)) {
        fail<ConfigError>("schema: choice '{}' of {} redeclares {}", c.value, key, spec.key);
      }
    }
  }
  choices_.push_back(std::move(set));
  return selector;
}

const Schema::ChoiceSet* Schema::choice_set(std::string_view selector) const {
  for (const ChoiceSet& set : choices_) {
    if (set.selector == selector) return &set;
  }
  return nullptr;
}

Schema Schema::resolve_choices(const std::map<std::string, std::string>& chosen) const {
  Schema out;
  for (const KeySpec& spec : keys_) {
    out.keys_.push_back(spec);
    const ChoiceSet* set = choice_set(spec.key);
    if (!set) continue;
    const auto it = chosen.find(spec.key);
    const std::string value =
        it != chosen.end() ? it->second : std::get<std::string>(*spec.default_value);
    const auto c = std::find_if(set->choices.begin(), set->choices.end(),
                                [&](const Choice& ch) { return ch.value == value; });
    if (c == set->choices.end()) {
      check_value(spec, Value(value), spec.key);  // throws naming the allowed values
      fail<ConfigError>("{}: '{}' is not a choice", spec.key, value);
    }
    for (const KeySpec& k : c->keys) out.keys_.push_back(k);
  }
  return out;
}

const KeySpec* Schema::find_any(std::string_view key) const {
  if (const KeySpec* spec = find(key)) return spec;
  for (const ChoiceSet& set : choices_) {
    for (const Choice& c : set.choices) {
      for (const KeySpec& spec : c.keys) {
        if (spec.matches(key)) return &spec;
      }
    }
  }
  return nullptr;
}

std::string Schema::not_applicable(std::string_view key,
                                   const std::map<std::string, std::string>& chosen) const {
  for (const ChoiceSet& set : choices_) {
    bool declared = false;
    for (const Choice& c : set.choices) {
      for (const KeySpec& spec : c.keys) declared = declared || spec.matches(key);
    }
    if (!declared) continue;
    const KeySpec* selector = find(set.selector);
    const auto it = chosen.find(set.selector);
    const std::string value =
        it != chosen.end() ? it->second : std::get<std::string>(*selector->default_value);
    for (const Choice& c : set.choices) {
      if (c.value != value) continue;
      std::vector<std::string> names;
      for (const KeySpec& spec : c.keys) names.emplace_back(spec.name());
      std::string full(key);
      if (const KeySpec* any = find_any(key)) full = any->key;
      return fmt::format("{} does not apply to {} '{}' (it takes: {})", full, selector->section(),
                         value, fmt::join(names, ", "));
    }
  }
  return {};
}

std::vector<std::string> Schema::choices_declaring(std::string_view selector,
                                                   std::string_view key) const {
  std::vector<std::string> out;
  if (const ChoiceSet* set = choice_set(selector)) {
    for (const Choice& c : set->choices) {
      for (const KeySpec& spec : c.keys) {
        if (spec.matches(key)) {
          out.push_back(c.value);
          break;
        }
      }
    }
  }
  return out;
}

std::vector<std::string> Schema::sections() const {
  std::vector<std::string> out;
  for (const KeySpec& spec : keys_) {
    const std::string section(spec.section());
    if (std::find(out.begin(), out.end(), section) == out.end()) out.push_back(section);
  }
  return out;
}

namespace {

void check_number(const KeySpec& spec, double v, std::string_view what, std::string_view shown,
                  std::string_view source) {
  // Written as negations so that NaN fails any range.
  const bool low_ok =
      !spec.lower || (spec.lower->inclusive ? v >= spec.lower->value : v > spec.lower->value);
  const bool high_ok =
      !spec.upper || (spec.upper->inclusive ? v <= spec.upper->value : v < spec.upper->value);
  if (!low_ok || !high_ok) {
    fail<ConfigError>("{}: {} must be {}, got {}", source, what, spec.range_str(), shown);
  }
}

void check_allowed(const KeySpec& spec, const std::string& v, std::string_view what,
                   std::string_view source) {
  if (spec.allowed.empty()) return;
  if (std::find(spec.allowed.begin(), spec.allowed.end(), v) != spec.allowed.end()) return;
  fail<ConfigError>("{}: {} must be one of {}, got '{}'{}", source, what, quoted_list(spec.allowed),
                    v, did_you_mean_hint(v, spec.allowed));
}

}  // namespace

std::string quoted_list(const std::vector<std::string>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    out += "'" + values[i] + "'";
  }
  return out;
}

// Range and allowed-value checks of a value whose type already matches the spec.
void check_value(const KeySpec& spec, const Value& value, std::string_view source) {
  auto element = [&](std::size_t i) { return fmt::format("{}[{}]", spec.key, i); };
  if (const auto* i = std::get_if<int64_t>(&value)) {
    check_number(spec, static_cast<double>(*i), spec.key, format_value(value), source);
  } else if (const auto* d = std::get_if<double>(&value)) {
    check_number(spec, *d, spec.key, format_value(value), source);
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    check_allowed(spec, *s, spec.key, source);
  } else if (const auto* il = std::get_if<std::vector<int64_t>>(&value)) {
    for (std::size_t k = 0; k < il->size(); ++k) {
      check_number(spec, static_cast<double>((*il)[k]), element(k), fmt::format("{}", (*il)[k]),
                   source);
    }
  } else if (const auto* dl = std::get_if<std::vector<double>>(&value)) {
    for (std::size_t k = 0; k < dl->size(); ++k) {
      check_number(spec, (*dl)[k], element(k), format_double((*dl)[k]), source);
    }
  } else if (const auto* sl = std::get_if<std::vector<std::string>>(&value)) {
    for (std::size_t k = 0; k < sl->size(); ++k) check_allowed(spec, (*sl)[k], element(k), source);
  }
}

std::map<std::string, double> resolve_numbers(std::string_view what,
                                              const std::vector<KeySpec>& specs,
                                              const std::map<std::string, double>& given) {
  std::vector<std::string> known;
  for (const KeySpec& s : specs) known.push_back(s.key);
  std::map<std::string, double> out;
  std::map<std::string, std::string> spelled;  // canonical name -> how it was given
  for (const auto& [name, v] : given) {
    // An init-capture: clang 14 cannot capture a structured binding directly.
    const auto spec = std::find_if(specs.begin(), specs.end(),
                                   [&name = name](const KeySpec& s) { return s.matches(name); });
    if (spec == specs.end()) {
      fail<ConfigError>("{}: unknown hyperparameter '{}'{}; it takes {}", what, name,
                        did_you_mean_hint(name, known), quoted_list(known));
    }
    if (const auto [it, fresh] = spelled.emplace(spec->key, name); !fresh) {
      fail<ConfigError>("{}: '{}' is given twice (as '{}' and '{}')", what, spec->key, it->second,
                        name);
    }
    const std::string shown = format_double(v);
    switch (spec->type) {
      case Type::Bool:
        if (v != 0.0 && v != 1.0) {
          fail<ConfigError>("{}: {} must be a bool (0 or 1), got {}", what, spec->key, shown);
        }
        break;
      case Type::Int:
        if (!std::isfinite(v) || v != std::floor(v)) {
          fail<ConfigError>("{}: {} must be a whole number, got {}", what, spec->key, shown);
        }
        check_value(*spec, Value(static_cast<int64_t>(v)), what);
        break;
      case Type::Float:
        if (!std::isfinite(v)) {
          fail<ConfigError>("{}: {} must be a finite number, got {}", what, spec->key, shown);
        }
        check_value(*spec, Value(v), what);
        break;
      default:
        fail<ConfigError>("{}: {} is {}, not a number", what, spec->key, type_name(spec->type));
    }
    out[spec->key] = v;
  }
  for (const KeySpec& s : specs) {
    if (out.count(s.key)) continue;
    if (!s.default_value) {
      fail<ConfigError>("{}: missing required hyperparameter '{}' ({})", what, s.key, s.doc);
    }
    const Value& d = *s.default_value;
    if (const auto* b = std::get_if<bool>(&d)) {
      out[s.key] = *b ? 1.0 : 0.0;
    } else if (const auto* i = std::get_if<int64_t>(&d)) {
      out[s.key] = static_cast<double>(*i);
    } else if (const auto* f = std::get_if<double>(&d)) {
      out[s.key] = *f;
    }
  }
  return out;
}

void Schema::check() const {
  auto check_default = [](const KeySpec& spec) {
    if (spec.default_value) {
      check_value(spec, *spec.default_value, fmt::format("schema: default of {}", spec.key));
    }
  };
  for (const KeySpec& spec : keys_) check_default(spec);
  for (const ChoiceSet& set : choices_) {
    for (const Choice& c : set.choices) {
      for (const KeySpec& spec : c.keys) check_default(spec);
    }
  }
}

// ---- Config -------------------------------------------------------------------------------------

Config::Config(Schema schema, std::vector<Value> values, std::vector<Source> sources)
    : schema_(std::move(schema)), values_(std::move(values)), sources_(std::move(sources)) {
  if (values_.size() != schema_.keys().size() || sources_.size() != values_.size()) {
    fail<ConfigError>("config: {} values and {} sources for {} declared keys", values_.size(),
                      sources_.size(), schema_.keys().size());
  }
}

std::size_t Config::index(std::string_view key) const {
  const auto& keys = schema_.keys();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].key == key) return i;
  }
  std::vector<std::string> names;
  for (const KeySpec& spec : keys) names.push_back(spec.key);
  fail<ConfigError>("config: key '{}' is not declared in the schema{}", key,
                    did_you_mean_hint(key, names));
}

const Value& Config::value(std::string_view key) const {
  return values_[index(key)];
}

Source Config::source(std::string_view key) const {
  return sources_[index(key)];
}

namespace {

template <typename T>
constexpr Type type_of();
template <>
constexpr Type type_of<bool>() {
  return Type::Bool;
}
template <>
constexpr Type type_of<int64_t>() {
  return Type::Int;
}
template <>
constexpr Type type_of<double>() {
  return Type::Float;
}
template <>
constexpr Type type_of<std::string>() {
  return Type::String;
}
template <>
constexpr Type type_of<std::vector<int64_t>>() {
  return Type::IntList;
}
template <>
constexpr Type type_of<std::vector<double>>() {
  return Type::FloatList;
}
template <>
constexpr Type type_of<std::vector<std::string>>() {
  return Type::StringList;
}

}  // namespace

template <typename T>
T Config::get(std::string_view key) const {
  const std::size_t i = index(key);
  if (const T* v = std::get_if<T>(&values_[i])) return *v;
  fail<ConfigError>("config: key '{}' is {}, read as {}", key, type_name(schema_.keys()[i].type),
                    type_name(type_of<T>()));
}
template bool Config::get<bool>(std::string_view) const;
template int64_t Config::get<int64_t>(std::string_view) const;
template double Config::get<double>(std::string_view) const;
template std::string Config::get<std::string>(std::string_view) const;
template std::vector<int64_t> Config::get<std::vector<int64_t>>(std::string_view) const;
template std::vector<double> Config::get<std::vector<double>>(std::string_view) const;
template std::vector<std::string> Config::get<std::vector<std::string>>(std::string_view) const;

std::vector<std::string> Config::keys() const {
  std::vector<std::string> out;
  for (const KeySpec& spec : schema_.keys()) out.push_back(spec.key);
  return out;
}

std::vector<std::string> Config::section_keys(std::string_view section) const {
  std::vector<std::string> out;
  for (const KeySpec& spec : schema_.keys()) {
    if (spec.section() == section) out.push_back(spec.key);
  }
  return out;
}

void Config::set_derived(std::string_view key, Value value) {
  const std::size_t i = index(key);
  const KeySpec& spec = schema_.keys()[i];
  if (value.index() != values_[i].index()) {
    fail<ConfigError>("config: derived value of {} has the wrong type", spec.key);
  }
  check_value(spec, value, "derived value");
  values_[i] = std::move(value);
  sources_[i] = Source::Derived;
}

std::map<std::string, double> Config::section_numbers(std::string_view section) const {
  std::map<std::string, double> out;
  const auto& keys = schema_.keys();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].section() != section) continue;
    const std::string name(keys[i].name());
    if (const auto* b = std::get_if<bool>(&values_[i])) out[name] = *b ? 1.0 : 0.0;
    if (const auto* n = std::get_if<int64_t>(&values_[i])) out[name] = static_cast<double>(*n);
    if (const auto* d = std::get_if<double>(&values_[i])) out[name] = *d;
  }
  return out;
}

std::string Config::to_toml() const {
  std::string out =
      "# playbook configuration, fully resolved: every key with its value, defaults included.\n";
  for (const std::string& section : schema_.sections()) {
    out += fmt::format("\n[{}]\n", section);
    const auto& keys = schema_.keys();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const KeySpec& spec = keys[i];
      if (spec.section() != section) continue;
      std::istringstream doc(spec.doc);
      for (std::string line; std::getline(doc, line);) out += "# " + line + "\n";
      out += fmt::format("{} = {}\n", spec.name(), format_value(values_[i]));
    }
  }
  return out;
}

// ---- loading ------------------------------------------------------------------------------------

namespace {

std::string_view node_kind(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "int";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "bool";
    case toml::node_type::array:
      return "list";
    case toml::node_type::table:
      return "table";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// A node in TOML spelling, inline.
std::string render(const toml::node& node) {
  if (const auto* s = node.as_string()) return quote(s->get());
  if (const auto* i = node.as_integer()) return fmt::format("{}", i->get());
  if (const auto* f = node.as_floating_point()) return format_double(f->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* a = node.as_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < a->size(); ++i) {
      if (i) out += ", ";
      out += render(*a->get(i));
    }
    return out + "]";
  }
  if (const auto* t = node.as_table()) {
    if (t->empty()) return "{}";
    std::string out = "{ ";
    bool first = true;
    for (auto&& [k, v] : *t) {
      if (!first) out += ", ";
      first = false;
      out += fmt::format("{} = {}", k.str(), render(v));
    }
    return out + " }";
  }
  std::ostringstream os;
  if (const auto* d = node.as_date()) os << *d;
  if (const auto* tm = node.as_time()) os << *tm;
  if (const auto* dt = node.as_date_time()) os << *dt;
  return os.str();
}

std::string describe(const toml::node& node) {
  return fmt::format("{} {}", node_kind(node), render(node));
}

template <typename T, typename F>
std::optional<Value> convert_list(const toml::node& node, F&& element) {
  const auto* a = node.as_array();
  if (!a) return std::nullopt;
  std::vector<T> out;
  for (const toml::node& e : *a) {
    std::optional<T> v = element(e);
    if (!v) return std::nullopt;
    out.push_back(std::move(*v));
  }
  return Value(std::move(out));
}

std::optional<int64_t> as_int(const toml::node& n) {
  if (const auto* i = n.as_integer()) return i->get();
  return std::nullopt;
}
std::optional<double> as_float(const toml::node& n) {
  if (const auto* f = n.as_floating_point()) return f->get();
  if (const auto* i = n.as_integer()) return static_cast<double>(i->get());  // ints are floats
  return std::nullopt;
}
std::optional<std::string> as_string(const toml::node& n) {
  if (const auto* s = n.as_string()) return s->get();
  return std::nullopt;
}

// The node as a value of `type`, or nothing when it has another type.
std::optional<Value> convert(const toml::node& node, Type type) {
  switch (type) {
    case Type::Bool:
      if (const auto* b = node.as_boolean()) return Value(b->get());
      return std::nullopt;
    case Type::Int:
      if (auto v = as_int(node)) return Value(*v);
      return std::nullopt;
    case Type::Float:
      if (auto v = as_float(node)) return Value(*v);
      return std::nullopt;
    case Type::String:
      if (auto v = as_string(node)) return Value(std::move(*v));
      return std::nullopt;
    case Type::IntList:
      return convert_list<int64_t>(node, as_int);
    case Type::FloatList:
      return convert_list<double>(node, as_float);
    case Type::StringList:
      return convert_list<std::string>(node, as_string);
  }
  return std::nullopt;
}

Value convert_checked(const KeySpec& spec, const toml::node& node, std::string_view source) {
  std::optional<Value> v = convert(node, spec.type);
  if (!v) {
    fail<ConfigError>("{}: {} must be {}, got {}", source, spec.key, type_name(spec.type),
                      describe(node));
  }
  check_value(spec, *v, source);
  return std::move(*v);
}

// " (did you mean '...'?)" for an unknown full key, trying in turn: a close name in the same
// section, a close full key with the typo budget of the name alone (so that "train.zzz" does not
// become "train.amp"), and a close name in any section ("model.momentum" ->
// "optimizer.momentum", "steps" -> "train.steps").
std::string key_hint(std::string_view key, const Schema& schema) {
  const std::size_t first_dot = key.find('.');
  const std::size_t last_dot = key.rfind('.');
  const std::string_view section =
      first_dot == std::string_view::npos ? std::string_view() : key.substr(0, first_dot);
  const std::string_view name = last_dot == std::string_view::npos ? key : key.substr(last_dot + 1);
  std::vector<std::string> full;
  std::vector<std::string> names;
  std::vector<std::string> section_full;
  std::vector<std::string> section_names;
  for (const KeySpec& spec : schema.keys()) {
    full.push_back(spec.key);
    names.emplace_back(spec.name());
    if (spec.section() == section) {
      section_full.push_back(spec.key);
      section_names.emplace_back(spec.name());
    }
  }
  auto hint = [](const std::string& s) { return fmt::format(" (did you mean '{}'?)", s); };
  if (auto i = closest(name, section_names)) return hint(section_full[*i]);
  if (auto i = closest(key, full, typo_threshold(name.size()))) return hint(full[*i]);
  if (auto i = closest(name, names)) return hint(full[*i]);
  return {};
}

std::string trim(std::string_view s) {
  const auto* ws = " \t\r\n";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const std::size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

// Entries of a table in the order they appear in the text (toml++ iterates in key order).
std::vector<std::pair<std::string, const toml::node*>> in_file_order(const toml::table& table) {
  std::vector<std::pair<std::string, const toml::node*>> out;
  for (auto&& [k, v] : table) out.emplace_back(std::string(k.str()), &v);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.second->source().begin;
    const auto& pb = b.second->source().begin;
    return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
  });
  return out;
}

// The value of one --set. The text is read as a TOML value ("3", "0.1", "\"sgd\"", "[1, 2]",
// "true"); a string key also takes the bare text ("sgd"), and a list of strings takes bare
// comma-separated words with or without brackets ("[flip, crop]").
Value override_value(const KeySpec& spec, const std::string& text, std::string_view source) {
  std::optional<toml::table> parsed;
  try {
    toml::table t = toml::parse("v = " + text);
    if (t.size() == 1 && t.contains("v")) parsed = std::move(t);
  } catch (const toml::parse_error&) {
  }
  if (parsed) {
    const toml::node& node = *parsed->get("v");
    if (spec.type == Type::String && !node.is_string()) {
      return convert_checked(spec, toml::value<std::string>(text), source);
    }
    return convert_checked(spec, node, source);
  }
  if (spec.type == Type::StringList) {
    std::string_view body = text;
    if (body.size() >= 2 && body.front() == '[' && body.back() == ']') {
      body = body.substr(1, body.size() - 2);
    }
    std::vector<std::string> words;
    if (!trim(body).empty()) {
      std::size_t start = 0;
      while (true) {
        const std::size_t comma = body.find(',', start);
        std::string word = trim(body.substr(start, comma - start));
        if (word.size() >= 2 && (word.front() == '"' || word.front() == '\'') &&
            word.back() == word.front()) {
          word = word.substr(1, word.size() - 2);
        }
        words.push_back(std::move(word));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
    }
    Value v(std::move(words));
    check_value(spec, v, source);
    return v;
  }
  // Not TOML: the bare text is a string, which is right for string keys and reported as a type
  // error ("must be a float, got string \"abc\"") for the others.
  return convert_checked(spec, toml::value<std::string>(text), source);
}

}  // namespace

namespace {

// The value of every choice selector ("optimizer.name"): the last --set, else the file, else the
// default. Each is checked against its allowed values here, naming where it came from.
std::map<std::string, std::string> chosen_values(const Schema& schema, const toml::table& root,
                                                 std::string_view source_name,
                                                 const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> chosen;
  for (const KeySpec& spec : schema.keys()) {
    if (!schema.is_selector(spec.key)) continue;
    std::optional<std::string> value;
    if (const toml::table* section = root[std::string(spec.section())].as_table()) {
      for (auto&& [k, v] : *section) {
        const std::string key = fmt::format("{}.{}", spec.section(), k.str());
        if (spec.matches(key) && v.is_string()) {
          value = v.as_string()->get();
          check_value(spec, Value(*value), source_name);
        }
      }
    }
    for (const std::string& item : overrides) {
      const std::size_t eq = item.find('=');
      if (eq == std::string::npos || !spec.matches(trim(std::string_view(item).substr(0, eq)))) {
        continue;
      }
      const Value v =
          override_value(spec, trim(std::string_view(item).substr(eq + 1)), "--set " + item);
      value = std::get<std::string>(v);
    }
    if (value) chosen[spec.key] = *value;
  }
  return chosen;
}

[[noreturn]] void fail_unknown_key(std::string_view source, const std::string& key,
                                   const Schema& declared, const Schema& resolved,
                                   const std::map<std::string, std::string>& chosen) {
  const std::string mismatch = declared.not_applicable(key, chosen);
  if (!mismatch.empty()) fail<ConfigError>("{}: {}", source, mismatch);
  fail<ConfigError>("{}: unknown key '{}'{}", source, key, key_hint(key, resolved));
}

}  // namespace

Config parse(std::string_view text, std::string_view source_name, const Schema& declared,
             const std::vector<std::string>& overrides) {
  declared.check();
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    fail<ConfigError>("{}:{}:{}: {}", source_name, e.source().begin.line, e.source().begin.column,
                      e.description());
  }
  const std::map<std::string, std::string> chosen =
      declared.has_choices() ? chosen_values(declared, root, source_name, overrides)
                             : std::map<std::string, std::string>{};
  const Schema schema = declared.has_choices() ? declared.resolve_choices(chosen) : declared;

  const auto& specs = schema.keys();
  std::vector<std::optional<Value>> values(specs.size());
  std::vector<Source> sources(specs.size(), Source::Default);
  std::vector<std::string> spelled(specs.size());  // how the file wrote each key
  auto slot = [&](const KeySpec* spec) {
    return static_cast<std::size_t>(
        std::find_if(specs.begin(), specs.end(), [&](const KeySpec& s) { return &s == spec; }) -
        specs.begin());
  };
  const std::vector<std::string> sections = schema.sections();

  for (const auto& [section, node] : in_file_order(root)) {
    const bool known_section =
        std::find(sections.begin(), sections.end(), section) != sections.end();
    if (!node->is_table()) {
      if (known_section) {
        fail<ConfigError>("{}: '{}' must be a section ([{}]), got {}", source_name, section,
                          section, describe(*node));
      }
      fail<ConfigError>("{}: unknown key '{}'{}", source_name, section, key_hint(section, schema));
    }
    if (!known_section) {
      fail<ConfigError>("{}: unknown section '{}'{}", source_name, section,
                        did_you_mean_hint(section, sections));
    }
    for (const auto& [name, value] : in_file_order(*node->as_table())) {
      const std::string key = section + "." + name;
      const KeySpec* spec = schema.find(key);
      if (!spec) fail_unknown_key(source_name, key, declared, schema, chosen);
      const std::size_t i = slot(spec);
      if (sources[i] == Source::File) {
        fail<ConfigError>("{}: {} is given twice (as '{}' and '{}')", source_name, spec->key,
                          spelled[i], key);
      }
      values[i] = convert_checked(*spec, *value, source_name);
      sources[i] = Source::File;
      spelled[i] = key;
    }
  }

  for (const std::string& item : overrides) {
    const std::string source = "--set " + item;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) {
      fail<ConfigError>("{}: expected section.key=value", source);
    }
    const std::string key = trim(std::string_view(item).substr(0, eq));
    const KeySpec* spec = schema.find(key);
    if (!spec) {
      const std::size_t dot = key.find('.');
      const std::string section = key.substr(0, dot);
      if (dot != std::string::npos &&
          std::find(sections.begin(), sections.end(), section) == sections.end() &&
          !did_you_mean(section, sections).empty()) {
        fail<ConfigError>("{}: unknown section '{}'{}", source, section,
                          did_you_mean_hint(section, sections));
      }
      fail_unknown_key(source, key, declared, schema, chosen);
    }
    const std::size_t i = slot(spec);
    values[i] = override_value(*spec, trim(std::string_view(item).substr(eq + 1)), source);
    sources[i] = Source::Override;
  }

  std::vector<Value> resolved;
  resolved.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const KeySpec& spec = specs[i];
    if (values[i]) {
      resolved.push_back(std::move(*values[i]));
    } else if (spec.default_value) {
      resolved.push_back(*spec.default_value);
    } else {
      fail<ConfigError>("{}: missing required key '{}'{}", source_name, spec.key,
                        spec.doc.empty() ? std::string() : fmt::format(" ({})", spec.doc));
    }
  }
  return Config(schema, std::move(resolved), std::move(sources));
}

Config load(const std::filesystem::path& file, const Schema& schema,
            const std::vector<std::string>& overrides) {
  const std::string name = file.string();
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) fail<ConfigError>("{}: no such file", name);
  if (std::filesystem::is_directory(file, ec)) {
    fail<ConfigError>("{}: is a directory, not a TOML file", name);
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) fail<ConfigError>("{}: cannot open file for reading", name);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail<ConfigError>("{}: read error", name);
  return parse(text.str(), name, schema, overrides);
}

}  // namespace pb::config
