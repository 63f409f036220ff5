#include "train/run_dir.h"

#include <fmt/format.h>

#include <fstream>
#include <variant>

#include "runtime/core/error.h"

namespace pb::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string step_name(int64_t step) {
  return fmt::format("step_{:08}", step);
}

// Latest complete checkpoint directory (step_N without a .tmp suffix), or empty.
fs::path latest_checkpoint(const fs::path& dir) {
  fs::path best;
  int64_t best_step = -1;
  if (!fs::is_directory(dir)) return best;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !name.starts_with("step_") || name.ends_with(".tmp")) continue;
    const int64_t step = std::stoll(name.substr(5));
    if (step > best_step) best_step = step, best = e.path();
  }
  return best;
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) fail("cannot write {}", tmp.string());
    out << text;
    if (!out.flush()) fail("cannot write {}", tmp.string());
  }
  fs::rename(tmp, path);
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read {}", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

// The resolved config as {"section": {"key": value}}: the values that ran, for summary.json.
json config_json(const config::Config& c) {
  json out = json::object();
  for (const std::string& key : c.keys()) {
    const config::KeySpec& spec = *c.schema().find(key);
    json& slot = out[std::string(spec.section())][std::string(spec.name())];
    std::visit([&](const auto& v) { slot = v; }, c.value(key));
  }
  return out;
}

}  // namespace pb::train
