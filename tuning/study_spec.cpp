// Study files: parsing, the search-space validation against the training config's key specs,
// and the mapping of a trial index to its parameters. See study_spec.h for the format.
#include "tuning/study_spec.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace pb::tuning {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail_key(const fs::path& file, std::string_view key, const std::string& msg) {
  throw StudyError(fmt::format("{}: {}: {}", file.string(), key, msg));
}

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

std::string describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return fmt::format("string \"{}\"", node.as_string()->get());
    case toml::node_type::integer:
      return fmt::format("integer {}", node.as_integer()->get());
    case toml::node_type::floating_point:
      return fmt::format("float {}", node.as_floating_point()->get());
    case toml::node_type::boolean:
      return node.as_boolean()->get() ? "true" : "false";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

// A TOML scalar as a ParamValue; nullopt for arrays, tables and dates.
std::optional<ParamValue> scalar_value(const toml::node& node) {
  if (const auto* b = node.as_boolean()) return ParamValue(b->get());
  if (const auto* i = node.as_integer()) return ParamValue(static_cast<std::int64_t>(i->get()));
  if (const auto* d = node.as_floating_point()) return ParamValue(d->get());
  if (const auto* s = node.as_string()) return ParamValue(s->get());
  return std::nullopt;
}

// The --set text of any TOML value (arrays of scalars included).
std::optional<std::string> node_override_text(const toml::node& node) {
  if (auto v = scalar_value(node)) return override_text(*v);
  if (const auto* arr = node.as_array()) {
    std::vector<std::string> parts;
    for (const toml::node& item : *arr) {
      auto v = scalar_value(item);
      if (!v) return std::nullopt;
      parts.push_back(override_text(*v));
    }
    return "[" + fmt::format("{}", fmt::join(parts, ", ")) + "]";
  }
  return std::nullopt;
}

std::string get_string(const fs::path& file, std::string_view key, const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  fail_key(file, key, "must be a string, got " + describe(node));
}

int64_t get_int(const fs::path& file, std::string_view key, const toml::node& node) {
  if (const auto* i = node.as_integer()) return i->get();
  fail_key(file, key, "must be an integer, got " + describe(node));
}

double get_number(const fs::path& file, std::string_view key, const toml::node& node) {
  if (const auto* i = node.as_integer()) return static_cast<double>(i->get());
  if (const auto* d = node.as_floating_point()) return d->get();
  fail_key(file, key, "must be a number, got " + describe(node));
}

template <typename E>
E parse_enum(const fs::path& file, std::string_view key, const std::string& text,
             const std::vector<std::pair<std::string, E>>& names) {
  std::vector<std::string> candidates;
  for (const auto& [name, value] : names) {
    if (name == text) return value;
    candidates.push_back(name);
  }
  fail_key(file, key,
           fmt::format("'{}' is not one of {}{}", text, fmt::join(candidates, ", "),
                       config::did_you_mean_hint(text, candidates)));
}

std::string fmt_double(double x) {
  return to_string(ParamValue(x));
}

const std::vector<std::string> kTopKeys = {"name",   "notes",     "base",    "kind",      "command",
                                           "trials", "seed",      "retries", "overrides", "fixed",
                                           "search", "objective", "workers", "store"};
const std::vector<std::string> kDimKeys = {"role",   "scale", "min",  "max",
                                           "values", "value", "type", "with"};

struct RawDim {
  std::string key;
  const toml::table* table;
};

// Walks [search]: a table holding any non-table value is a dimension; others are sections of
// dotted keys ([search.optimizer.learning_rate]).
void collect_dims(const fs::path& file, const std::string& prefix, const toml::table& table,
                  std::vector<RawDim>& out) {
  for (const auto& [name, node] : in_file_order(table)) {
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const toml::table* t = node->as_table();
    if (!t) {
      fail_key(file, "search." + key,
               "a dimension is a table (scale, min, max, values, role...), got " + describe(*node));
    }
    const bool has_value =
        std::any_of(t->begin(), t->end(), [](const auto& kv) { return !kv.second.is_table(); });
    if (has_value || t->empty()) {
      out.push_back({key, t});
    } else {
      collect_dims(file, key, *t, out);
    }
  }
}

// Fixed values of [fixed] (nested tables are dotted keys).
void collect_fixed(const fs::path& file, const std::string& prefix, const toml::table& table,
                   std::vector<std::string>& out) {
  for (const auto& [name, node] : in_file_order(table)) {
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    if (const toml::table* t = node->as_table()) {
      collect_fixed(file, key, *t, out);
      continue;
    }
    const auto text = node_override_text(*node);
    if (!text) fail_key(file, "fixed." + key, "unsupported value " + describe(*node));
    out.push_back(key + "=" + *text);
  }
}

SearchParam parse_dim(const fs::path& file, const RawDim& raw, const config::Schema* schema,
                      const std::map<std::string, ParamType>* hints,
                      std::vector<std::string>& fixed) {
  const std::string where = "search." + raw.key;
  SearchParam p;
  p.key = raw.key;
  const toml::table& t = *raw.table;
  if (t.empty()) fail_key(file, where, "empty dimension: give min and max, values, or a value");
  for (const auto& [name, node] : in_file_order(t)) {
    if (std::find(kDimKeys.begin(), kDimKeys.end(), name) == kDimKeys.end()) {
      fail_key(file, where + "." + name,
               "unknown field" + config::did_you_mean_hint(name, kDimKeys) +
                   "; a dimension takes role, scale, min, max, values, value, type, with");
    }
  }
  if (const auto* n = t.get("role")) {
    p.role = parse_enum<Role>(
        file, where + ".role", get_string(file, where + ".role", *n),
        {{"scientific", Role::Scientific}, {"nuisance", Role::Nuisance}, {"fixed", Role::Fixed}});
  }
  const config::KeySpec* spec = schema ? schema->find_any(raw.key) : nullptr;
  std::optional<ParamType> hint;
  if (!schema && hints) {
    if (auto it = hints->find(raw.key); it != hints->end()) hint = it->second;
  }
  if (p.role == Role::Fixed) {
    const toml::node* value = t.get("value");
    if (!value) fail_key(file, where, "a fixed dimension needs value = ...");
    for (const char* other : {"min", "max", "values", "scale"}) {
      if (t.contains(other)) {
        fail_key(file, where + "." + other, "a fixed dimension has only a value");
      }
    }
    const auto text = node_override_text(*value);
    if (!text) fail_key(file, where + ".value", "unsupported value " + describe(*value));
    fixed.push_back(raw.key + "=" + *text);
    return p;
  }
  if (t.contains("value")) {
    fail_key(file, where + ".value", "value is for role = \"fixed\"; give min/max or values");
  }
  const toml::node* values = t.get("values");
  const toml::node* min = t.get("min");
  const toml::node* max = t.get("max");
  std::optional<ParamType> type;
  if (const auto* n = t.get("type")) {
    type = parse_enum<ParamType>(file, where + ".type", get_string(file, where + ".type", *n),
                                 {{"float", ParamType::Float},
                                  {"int", ParamType::Int},
                                  {"categorical", ParamType::Categorical},
                                  {"bool", ParamType::Bool}});
  }
  if (const auto* n = t.get("scale")) {
    p.scale =
        parse_enum<Dimension::Scale>(file, where + ".scale", get_string(file, where + ".scale", *n),
                                     {{"linear", Dimension::Scale::Linear},
                                      {"log", Dimension::Scale::Log},
                                      {"reverse_log", Dimension::Scale::ReverseLog}});
    if (values) fail_key(file, where + ".scale", "a scale applies to min/max, not to values");
  }
  if (values && (min || max)) {
    fail_key(file, where, "give either min and max or values, not both");
  }
  if (type == ParamType::Bool && !values) {
    p.values = {ParamValue(false), ParamValue(true)};
  } else if (!type && !values && !min && !max &&
             ((spec && spec->type == config::Type::Bool) || hint == ParamType::Bool)) {
    type = ParamType::Bool;
    p.values = {ParamValue(false), ParamValue(true)};
  }
  if (values) {
    const toml::array* arr = values->as_array();
    if (!arr) fail_key(file, where + ".values", "must be an array, got " + describe(*values));
    if (arr->empty()) fail_key(file, where + ".values", "categorical with no values");
    for (const toml::node& item : *arr) {
      auto v = scalar_value(item);
      if (!v) {
        fail_key(file, where + ".values",
                 "values must be booleans, numbers or strings, got " + describe(item));
      }
      // A float key takes integers written without a decimal point.
      if (spec && spec->type == config::Type::Float) {
        if (const auto* i = std::get_if<std::int64_t>(&*v)) *v = static_cast<double>(*i);
      }
      for (const ParamValue& seen : p.values) {
        if (seen == *v) fail_key(file, where + ".values", "value " + to_string(*v) + " repeats");
      }
      p.values.push_back(*v);
    }
    if (!type) {
      const bool all_bool = std::all_of(p.values.begin(), p.values.end(), [](const auto& v) {
        return std::holds_alternative<bool>(v);
      });
      type = all_bool ? ParamType::Bool : ParamType::Categorical;
    }
  } else if (p.values.empty()) {
    if (!min || !max) {
      fail_key(file, where, "give min and max (a range) or values = [...] (a list)");
    }
    if (type == ParamType::Categorical) {
      fail_key(file, where, "categorical with no values: give values = [...]");
    }
    p.min = get_number(file, where + ".min", *min);
    p.max = get_number(file, where + ".max", *max);
    if (!type) {
      if (spec) {
        type = spec->type == config::Type::Int ? ParamType::Int : ParamType::Float;
      } else if (hint == ParamType::Int || hint == ParamType::Float) {
        type = hint;
      } else {
        type = min->is_integer() && max->is_integer() ? ParamType::Int : ParamType::Float;
      }
    }
    if (type == ParamType::Int && (!min->is_integer() || !max->is_integer())) {
      fail_key(file, where, "an int dimension needs integer min and max");
    }
    if (!std::isfinite(p.min) || !std::isfinite(p.max)) {
      fail_key(file, where, "min and max must be finite");
    }
    if (!(p.min < p.max)) {
      fail_key(file, where,
               fmt::format("empty range: min {} must be below max {}", fmt_double(p.min),
                           fmt_double(p.max)));
    }
    if (p.scale == Dimension::Scale::Log && !(p.min > 0)) {
      fail_key(file, where, "log scale needs min > 0, got min " + fmt_double(p.min));
    }
    if (p.scale == Dimension::Scale::Log && *type == ParamType::Int && p.min < 1) {
      fail_key(file, where, "an int dimension on a log scale needs min >= 1");
    }
    if (p.scale == Dimension::Scale::ReverseLog && !(p.max < 1)) {
      fail_key(
          file, where,
          "reverse_log scale (uniform in log(1 - x)) needs max < 1, got max " + fmt_double(p.max));
    }
    if (p.scale == Dimension::Scale::ReverseLog && *type == ParamType::Int) {
      fail_key(file, where, "reverse_log scale is for floats near 1, not ints");
    }
  }
  p.type = *type;
  if (p.role == Role::Scientific && p.values.empty()) {
    fail_key(file, where,
             "a scientific dimension needs values = [...]: each value is crossed with the "
             "nuisance search");
  }
  if (const toml::node* with = t.get("with")) {
    // Paired keys: { "train.max_train_steps" = [30, 300] }, one value per value of this one.
    const toml::table* w = with->as_table();
    if (!w)
      fail_key(file, where + ".with", "must be a table of key = [values], got " + describe(*with));
    if (p.role != Role::Scientific)
      fail_key(file, where + ".with", "only a scientific dimension pairs keys");
    for (const auto& [key, node] : in_file_order(*w)) {
      const toml::array* arr = node->as_array();
      if (!arr || arr->size() != p.values.size()) {
        fail_key(file, where + ".with." + key,
                 fmt::format("must be a list of {} values, one per value of {}", p.values.size(),
                             raw.key));
      }
      const config::KeySpec* wspec = schema ? schema->find_any(key) : nullptr;
      std::vector<ParamValue> list;
      for (const toml::node& item : *arr) {
        auto v = scalar_value(item);
        if (!v)
          fail_key(file, where + ".with." + key, "values must be booleans, numbers or strings");
        if (wspec && wspec->type == config::Type::Float) {
          if (const auto* i = std::get_if<std::int64_t>(&*v)) *v = static_cast<double>(*i);
        }
        list.push_back(*v);
      }
      p.with.emplace_back(key, std::move(list));
    }
  }
  return p;
}

std::string strip_source(const std::string& msg, const fs::path& base) {
  const std::string prefix = base.string() + ": ";
  if (msg.rfind(prefix, 0) == 0) return msg.substr(prefix.size());
  if (msg.rfind("--set ", 0) == 0) {
    const std::size_t eq = msg.find('=');
    const std::size_t colon = msg.find(": ", eq == std::string::npos ? 0 : eq);
    if (colon != std::string::npos) return msg.substr(colon + 2);
  }
  return msg;
}

// Every key a config can have: the plain keys and the keys of every entry of each choice section
// ("optimizer.beta2" exists once optimizer.name = "adam"), for did-you-mean.
std::vector<std::string> every_key(const config::Schema& schema) {
  std::vector<std::string> out;
  auto add = [&](const std::string& key) {
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  };
  for (const config::KeySpec& k : schema.keys()) {
    add(k.key);
    if (!schema.is_selector(k.key)) continue;
    for (const std::string& value : k.allowed) {
      const config::Schema chosen = schema.resolve_choices({{k.key, value}});
      for (const config::KeySpec& c : chosen.keys()) add(c.key);
    }
  }
  return out;
}

bool in_bound(double x, const std::optional<config::Bound>& b, bool lower) {
  if (!b) return true;
  if (lower) return b->inclusive ? x >= b->value : x > b->value;
  return b->inclusive ? x <= b->value : x < b->value;
}

// The schemas of the choices a study makes: each selector ("optimizer.name") takes its value
// from a search dimension (every listed value), the fixed values, the base config or its
// default. One schema per combination.
std::vector<config::Schema> chosen_schemas(const StudySpec& spec, const config::Schema& schema) {
  std::vector<std::map<std::string, std::string>> combos(1);
  std::optional<toml::table> base;
  try {
    base = toml::parse_file(spec.base_path().string());
  } catch (const std::exception&) {
    // The resolver reports an unreadable base config.
  }
  for (const config::KeySpec& k : schema.keys()) {
    if (!schema.is_selector(k.key)) continue;
    std::vector<std::string> values;
    for (const SearchParam& p : spec.search) {
      if (p.key != k.key) continue;
      for (const ParamValue& v : p.values) {
        if (const auto* str = std::get_if<std::string>(&v)) values.push_back(*str);
      }
    }
    for (const std::string& o : spec.fixed) {
      if (!values.empty() || o.rfind(k.key + "=", 0) != 0) continue;
      std::string v = o.substr(k.key.size() + 1);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      values.push_back(v);
    }
    if (values.empty() && base) {
      const std::string section(k.section()), name(k.name());
      if (const auto* t = base->get_as<toml::table>(section)) {
        if (const auto* v = t->get_as<std::string>(name)) values.push_back(v->get());
      }
    }
    if (values.empty()) continue;  // the default
    std::vector<std::map<std::string, std::string>> next;
    for (const auto& c : combos) {
      for (const std::string& v : values) {
        auto with = c;
        with[k.key] = v;
        next.push_back(std::move(with));
      }
    }
    combos = std::move(next);
  }
  std::vector<config::Schema> out;
  for (const auto& c : combos) {
    try {
      out.push_back(schema.resolve_choices(c));
    } catch (const config::ConfigError&) {
      // Not a choice: the allowed-values check of the selector reports it.
    }
  }
  return out;
}

// A search dimension against the key's spec: type, range, allowed values.
void check_key_spec(const fs::path& file, const SearchParam& p, const config::KeySpec& spec) {
  const std::string where = "search." + p.key;
  const config::KeySpec* k = &spec;
  const std::string range = k->range_str();

  auto check_number = [&](double x, std::string_view what) {
    if (!in_bound(x, k->lower, true) || !in_bound(x, k->upper, false)) {
      fail_key(
          file, where,
          fmt::format("{} {} is out of range: {} must be {}", what, fmt_double(x), p.key, range));
    }
  };
  switch (k->type) {
    case config::Type::Float:
    case config::Type::Int: {
      const bool want_int = k->type == config::Type::Int;
      if (p.values.empty()) {
        if (want_int && p.type != ParamType::Int) {
          fail_key(file, where, p.key + " is an int key; use type = \"int\"");
        }
        check_number(p.min, "min");
        check_number(p.max, "max");
      }
      for (const ParamValue& v : p.values) {
        double x = 0;
        if (const auto* i = std::get_if<std::int64_t>(&v)) {
          x = static_cast<double>(*i);
        } else if (const auto* d = std::get_if<double>(&v); d && !want_int) {
          x = *d;
        } else {
          fail_key(file, where,
                   fmt::format("value {} is not {} (the type of {})", to_string(v),
                               config::type_name(k->type), p.key));
        }
        check_number(x, "value");
      }
      break;
    }
    case config::Type::Bool:
      for (const ParamValue& v : p.values) {
        if (!std::holds_alternative<bool>(v)) {
          fail_key(file, where, fmt::format("value {} is not a bool", to_string(v)));
        }
      }
      if (p.values.empty()) fail_key(file, where, p.key + " is a bool key: use type = \"bool\"");
      break;
    case config::Type::String:
      if (p.values.empty()) {
        fail_key(file, where, p.key + " is a string key: give values = [\"a\", \"b\"]");
      }
      for (const ParamValue& v : p.values) {
        const auto* s = std::get_if<std::string>(&v);
        if (!s) fail_key(file, where, fmt::format("value {} is not a string", to_string(v)));
        if (!k->allowed.empty() &&
            std::find(k->allowed.begin(), k->allowed.end(), *s) == k->allowed.end()) {
          fail_key(file, where,
                   fmt::format("'{}' is not one of {}{}", *s, fmt::join(k->allowed, ", "),
                               config::did_you_mean_hint(*s, k->allowed)));
        }
      }
      break;
    default:
      fail_key(
          file, where,
          fmt::format("{} is {}: list keys can only be fixed", p.key, config::type_name(k->type)));
  }
}

}  // namespace

std::string_view to_string(Role role) {
  switch (role) {
    case Role::Scientific:
      return "scientific";
    case Role::Nuisance:
      return "nuisance";
    case Role::Fixed:
      return "fixed";
  }
  return "?";
}

std::string_view to_string(ParamType type) {
  switch (type) {
    case ParamType::Float:
      return "float";
    case ParamType::Int:
      return "int";
    case ParamType::Categorical:
      return "categorical";
    case ParamType::Bool:
      return "bool";
  }
  return "?";
}

std::string_view to_string(Dimension::Scale scale) {
  switch (scale) {
    case Dimension::Scale::Linear:
      return "linear";
    case Dimension::Scale::Log:
      return "log";
    case Dimension::Scale::ReverseLog:
      return "reverse_log";
  }
  return "?";
}

int64_t StudySpec::scientific_combinations() const {
  int64_t n = 1;
  for (const SearchParam& p : search) {
    if (p.role == Role::Scientific) n *= static_cast<int64_t>(p.values.size());
  }
  return n;
}

std::vector<const SearchParam*> StudySpec::nuisance() const {
  std::vector<const SearchParam*> out;
  for (const SearchParam& p : search) {
    if (p.role == Role::Nuisance) out.push_back(&p);
  }
  return out;
}

std::vector<const SearchParam*> StudySpec::scientific() const {
  std::vector<const SearchParam*> out;
  for (const SearchParam& p : search) {
    if (p.role == Role::Scientific) out.push_back(&p);
  }
  return out;
}

std::string override_text(const ParamValue& value) {
  struct Visitor {
    config::Value operator()(bool b) const { return b; }
    config::Value operator()(std::int64_t x) const { return static_cast<int64_t>(x); }
    config::Value operator()(double x) const { return x; }
    config::Value operator()(const std::string& s) const { return s; }
  };
  return config::format_value(std::visit(Visitor{}, value));
}

std::vector<std::string> trial_overrides(const StudySpec& spec, const Params& params) {
  std::vector<std::string> out = spec.fixed;
  for (const Assignment& a : params) out.push_back(a.name + "=" + override_text(a.value));
  return out;
}

StudySpec parse_study(std::string_view text, const fs::path& file, const fs::path& origin_dir,
                      const TrainRules* rules, const std::map<std::string, ParamType>* type_hints) {
  StudySpec spec;
  spec.file = file;
  spec.origin_dir = origin_dir;
  spec.text = std::string(text);
  spec.name = file.stem().string();
  toml::table root;
  try {
    root = toml::parse(text, file.string());
  } catch (const toml::parse_error& e) {
    throw StudyError(fmt::format("{}:{}:{}: {}", file.string(), e.source().begin.line,
                                 e.source().begin.column, e.description()));
  }
  for (const auto& [name, node] : in_file_order(root)) {
    if (std::find(kTopKeys.begin(), kTopKeys.end(), name) == kTopKeys.end()) {
      fail_key(file, name, "unknown key" + config::did_you_mean_hint(name, kTopKeys));
    }
  }
  if (const auto* n = root.get("name")) spec.name = get_string(file, "name", *n);
  if (spec.name.empty()) fail_key(file, "name", "must not be empty");
  if (const auto* n = root.get("notes")) spec.notes = get_string(file, "notes", *n);
  if (const auto* n = root.get("kind")) {
    spec.kind =
        parse_enum<TrialKind>(file, "kind", get_string(file, "kind", *n),
                              {{"train", TrialKind::Train}, {"command", TrialKind::Command}});
  }
  if (const auto* n = root.get("base")) spec.base = get_string(file, "base", *n);
  if (const auto* n = root.get("command")) {
    const toml::array* arr = n->as_array();
    if (!arr || arr->empty()) {
      fail_key(file, "command",
               "must be a non-empty array of strings, e.g. [\"python3\", \"f.py\"]");
    }
    for (const toml::node& item : *arr) spec.command.push_back(get_string(file, "command", item));
  }
  if (spec.kind == TrialKind::Train) {
    if (spec.base.empty()) fail_key(file, "base", "a train study needs base = \"CONFIG.toml\"");
    if (!spec.command.empty()) fail_key(file, "command", "only for kind = \"command\"");
    std::error_code ec;
    if (!fs::is_regular_file(spec.base_path(), ec)) {
      fail_key(file, "base", "no such file: " + spec.base_path().string());
    }
  } else if (spec.command.empty()) {
    fail_key(file, "command", "a command study needs command = [\"program\", \"arg\", ...]");
  }
  const toml::node* trials = root.get("trials");
  if (!trials) fail_key(file, "trials", "missing: the number of nuisance points per combination");
  spec.trials = get_int(file, "trials", *trials);
  if (spec.trials < 1) fail_key(file, "trials", "must be at least 1");
  if (const auto* n = root.get("seed")) {
    const int64_t seed = get_int(file, "seed", *n);
    if (seed < 0) fail_key(file, "seed", "must be >= 0");
    spec.seed = static_cast<uint64_t>(seed);
  }
  if (const auto* n = root.get("retries")) {
    const int64_t r = get_int(file, "retries", *n);
    if (r < 0 || r > 100) fail_key(file, "retries", "must be in [0, 100]");
    spec.retries = static_cast<int>(r);
  }
  if (const auto* n = root.get("store")) {
    // The same locations as open_store (tuning/store.h) and `--store`: a PostgreSQL URL, or a
    // SQLite file (relative to this file; sqlite:// prefix optional). Checked here so that a typo
    // fails before anything is created; the scheme only is echoed (a URL may hold a password).
    const std::string store = get_string(file, "store", *n);
    const std::size_t scheme = store.find("://");
    const auto has_scheme = [&](std::string_view s) {
      return store.rfind(s, 0) == 0 && store.size() > s.size();
    };
    if (store.empty()) {
      fail_key(file, "store", "must not be empty (leave it out for STUDY_DIR/study.db)");
    } else if (has_scheme("postgresql://") || has_scheme("postgres://")) {
      spec.store = store;
    } else if (scheme != std::string::npos && !has_scheme("sqlite://")) {
      fail_key(file, "store",
               fmt::format("unknown scheme '{}': use \"postgresql://user@host/db\" or the path of "
                           "a SQLite file",
                           store.substr(0, scheme + 3)));
    } else {
      const fs::path path = scheme == std::string::npos ? store : store.substr(scheme + 3);
      spec.store = (origin_dir / path).lexically_normal().string();
    }
  }
  if (const auto* n = root.get("workers")) {
    const toml::table* t = n->as_table();
    if (!t) fail_key(file, "workers", "must be a table");
    for (const auto& [name, node] : in_file_order(*t)) {
      const std::string key = "workers." + name;
      if (name == "heartbeat_s") {
        spec.heartbeat_s = get_number(file, key, *node);
      } else if (name == "stale_after_s") {
        spec.stale_after_s = get_number(file, key, *node);
      } else {
        fail_key(file, key,
                 "unknown key" + config::did_you_mean_hint(name, {"heartbeat_s", "stale_after_s"}));
      }
    }
    if (!(spec.heartbeat_s > 0) || !(spec.stale_after_s > 2 * spec.heartbeat_s)) {
      fail_key(file, "workers", "need heartbeat_s > 0 and stale_after_s > 2 x heartbeat_s");
    }
  }
  if (spec.kind == TrialKind::Command) spec.objective.metric = "objective";
  if (const auto* n = root.get("objective")) {
    if (const auto* s = n->as_string()) {
      spec.objective.metric = s->get();
    } else if (const toml::table* t = n->as_table()) {
      for (const auto& [name, node] : in_file_order(*t)) {
        const std::string key = "objective." + name;
        if (name == "metric") {
          spec.objective.metric = get_string(file, key, *node);
        } else if (name == "goal") {
          spec.objective.goal =
              parse_enum<Goal>(file, key, get_string(file, key, *node),
                               {{"minimize", Goal::Minimize}, {"maximize", Goal::Maximize}});
        } else if (name == "reduce") {
          spec.objective.reduce =
              parse_enum<Reduce>(file, key, get_string(file, key, *node),
                                 {{"best", Reduce::Best}, {"last", Reduce::Last}});
        } else {
          fail_key(file, key,
                   "unknown key" + config::did_you_mean_hint(name, {"metric", "goal", "reduce"}));
        }
      }
    } else {
      fail_key(file, "objective", "must be a metric name or a table, got " + describe(*n));
    }
    if (spec.objective.metric.empty()) fail_key(file, "objective.metric", "must not be empty");
  }
  if (const auto* n = root.get("overrides")) {
    const toml::array* arr = n->as_array();
    if (!arr) fail_key(file, "overrides", "must be an array of \"section.key=value\" strings");
    for (const toml::node& item : *arr) {
      const std::string o = get_string(file, "overrides", item);
      if (o.find('=') == std::string::npos || o.front() == '=') {
        fail_key(file, "overrides", "'" + o + "' is not section.key=value");
      }
      spec.fixed.push_back(o);
    }
  }
  if (const auto* n = root.get("fixed")) {
    const toml::table* t = n->as_table();
    if (!t) fail_key(file, "fixed", "must be a table of config keys");
    collect_fixed(file, "", *t, spec.fixed);
  }
  const toml::node* search = root.get("search");
  if (!search || !search->is_table()) {
    fail_key(file, "search", "missing: give at least one [search.<config key>] dimension");
  }
  std::vector<RawDim> raw;
  collect_dims(file, "", *search->as_table(), raw);
  const config::Schema* schema = rules && spec.kind == TrialKind::Train ? rules->schema : nullptr;
  for (const RawDim& r : raw) {
    SearchParam p = parse_dim(file, r, schema, type_hints, spec.fixed);
    if (p.role != Role::Fixed) spec.search.push_back(std::move(p));
  }
  if (spec.search.empty()) {
    fail_key(file, "search", "no scientific or nuisance dimension to search over");
  }
  if (spec.nuisance().size() > kMaxHaltonDims) {
    fail_key(file, "search", fmt::format("at most {} nuisance dimensions", kMaxHaltonDims));
  }
  if (spec.total_trials() > 1000000) {
    fail_key(file, "trials",
             fmt::format("{} trials x {} scientific combinations is too many", spec.trials,
                         spec.scientific_combinations()));
  }
  if (rules && spec.kind == TrialKind::Train) validate_space(spec, *rules);
  return spec;
}

StudySpec load_study_file(const fs::path& file, const TrainRules* rules,
                          const std::optional<fs::path>& origin_dir) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw StudyError(file.string() + ": no such study file");
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw StudyError(file.string() + ": cannot read the file");
  const fs::path origin = origin_dir ? *origin_dir : fs::absolute(file).parent_path();
  return parse_study(text.str(), file, origin, rules);
}

void validate_space(const StudySpec& spec, const TrainRules& rules) {
  const fs::path& file = spec.file;
  if (!rules.schema) return;
  const config::Schema& schema = *rules.schema;
  const std::vector<std::string> all_keys = every_key(schema);

  // 1. Keys, types and ranges, each against its key spec.
  for (const std::string& o : spec.fixed) {
    const std::string key = o.substr(0, o.find('='));
    if (!schema.find_any(key)) {
      fail_key(file, "fixed." + key, "unknown key" + config::did_you_mean_hint(key, all_keys));
    }
  }
  const std::vector<config::Schema> chosen = chosen_schemas(spec, schema);
  for (const SearchParam& p : spec.search) {
    const std::string where = "search." + p.key;
    if (!schema.find_any(p.key)) {
      fail_key(file, where, "unknown key" + config::did_you_mean_hint(p.key, all_keys));
    }
    // The spec of the key under each choice the study makes (optimizer.momentum of 'momentum'
    // and of 'rmsprop' may differ); a key no chosen entry declares is checked against the first
    // that does, and the resolver below reports that it does not apply.
    std::vector<const config::KeySpec*> specs;
    for (const config::Schema& c : chosen) {
      if (const config::KeySpec* k = c.find(p.key)) specs.push_back(k);
    }
    if (specs.empty()) specs.push_back(schema.find_any(p.key));
    for (const config::KeySpec* k : specs) check_key_spec(file, p, *k);
    for (const auto& [key, values] : p.with) {
      const config::KeySpec* k = schema.find_any(key);
      if (!k)
        fail_key(file, where + ".with." + key,
                 "unknown key" + config::did_you_mean_hint(key, all_keys));
      SearchParam paired;
      paired.key = key;
      paired.values = values;
      check_key_spec(file, paired, *k);
    }
  }

  // 2. Cross-key rules, through the training config's own resolver.
  const fs::path base = spec.base_path();
  auto try_resolve = [&](const std::vector<std::string>& overrides) -> std::optional<std::string> {
    try {
      rules.resolve(base, overrides);
      return std::nullopt;
    } catch (const config::ConfigError& e) {
      return strip_source(e.what(), base);
    } catch (const pb::Error& e) {
      return std::string(e.what());
    }
  };
  auto mentioned = [](const std::string& msg, const std::string& key) {
    return msg.find(key) != std::string::npos;
  };
  if (auto err = try_resolve(spec.fixed)) {
    for (const std::string& o : spec.fixed) {
      const std::string key = o.substr(0, o.find('='));
      if (mentioned(*err, key)) fail_key(file, "fixed." + key, *err);
    }
    fail_key(file, "base", *err);
  }
  const auto scientific = spec.scientific();
  const auto nuisance = spec.nuisance();
  const int64_t combos = std::min<int64_t>(spec.scientific_combinations(), 64);
  for (int64_t c = 0; c < combos; ++c) {
    // The scientific values of combination c, and the nuisance dimensions at their lower end.
    Params sci = trial_params(spec, static_cast<uint64_t>(c));
    std::size_t paired = 0;
    for (const SearchParam* p : scientific) paired += p->with.size();
    sci.erase(sci.begin() + static_cast<std::ptrdiff_t>(scientific.size() + paired), sci.end());
    if (auto err = sci.empty() ? std::nullopt : try_resolve(trial_overrides(spec, sci))) {
      for (const Assignment& a : sci) {
        if (mentioned(*err, a.name)) fail_key(file, "search." + a.name, *err);
      }
      fail_key(file, "search." + sci.front().name, *err);
    }
    // Each nuisance dimension is an error only when it fails at every probe (its bounds, or each
    // listed value): then no trial could run. Failing at some values makes those trials
    // infeasible, which is data.
    for (const SearchParam* p : nuisance) {
      std::vector<ParamValue> probes = p->values;
      if (probes.empty()) {
        if (p->type == ParamType::Int) {
          probes = {ParamValue(static_cast<std::int64_t>(p->min)),
                    ParamValue(static_cast<std::int64_t>(p->max))};
        } else {
          probes = {ParamValue(p->min), ParamValue(p->max)};
        }
      }
      std::optional<std::string> first_error;
      bool any_ok = false;
      for (const ParamValue& v : probes) {
        Params one = sci;
        one.push_back({p->key, v});
        auto err = try_resolve(trial_overrides(spec, one));
        if (!err) {
          any_ok = true;
          break;
        }
        if (!first_error) first_error = err;
      }
      if (!any_ok) fail_key(file, "search." + p->key, *first_error);
    }
  }
}

Params trial_params(const StudySpec& spec, uint64_t index) {
  const auto scientific = spec.scientific();
  const auto nuisance = spec.nuisance();
  const auto combos = static_cast<uint64_t>(spec.scientific_combinations());
  uint64_t combo = index % combos;
  const uint64_t point = index / combos;
  Params out(scientific.size());
  std::vector<std::size_t> chosen(scientific.size());
  // Mixed radix, the last scientific dimension fastest.
  for (std::size_t j = scientific.size(); j-- > 0;) {
    const std::size_t n = scientific[j]->values.size();
    out[j] = {scientific[j]->key, scientific[j]->values[combo % n]};
    chosen[j] = combo % n;
    combo /= n;
  }
  // Paired keys (`with`) after the scientific ones, in file order.
  for (std::size_t j = 0; j < scientific.size(); ++j) {
    for (const auto& [key, values] : scientific[j]->with) out.push_back({key, values[chosen[j]]});
  }
  if (nuisance.empty()) return out;
  SearchSpace space;
  for (const SearchParam* p : nuisance) {
    if (!p->values.empty()) {
      space.add(Choice{p->key, p->values});
    } else if (p->type == ParamType::Int) {
      space.add(Dimension{p->key, p->scale, p->min, p->max + 1});
    } else {
      space.add(Dimension{p->key, p->scale, p->min, p->max});
    }
  }
  const QuasiRandomSearch search(std::move(space), HaltonOptions{.seed = spec.seed});
  Params sampled = search.suggest(point);
  for (std::size_t j = 0; j < nuisance.size(); ++j) {
    const SearchParam& p = *nuisance[j];
    if (p.values.empty() && p.type == ParamType::Int) {
      const double x = std::get<double>(sampled[j].value);
      sampled[j].value = static_cast<std::int64_t>(std::min(std::floor(x), p.max));
    }
    out.push_back(std::move(sampled[j]));
  }
  return out;
}

}  // namespace pb::tuning
