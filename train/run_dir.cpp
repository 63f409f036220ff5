#include "train/run_dir.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <variant>

#include "runtime/checkpoint/atomic_file.h"
#include "runtime/core/error.h"

namespace pb::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string step_name(int64_t step) {
  return fmt::format("step_{:08}", step);
}

namespace {

// The step of a checkpoint directory name ("step_00001200" -> 1200), or -1 for other names.
int64_t step_of(const std::string& name) {
  if (!name.starts_with("step_") || name.size() == 5) return -1;
  int64_t step = -1;
  const char* first = name.data() + 5;
  const char* last = name.data() + name.size();
  const auto [end, ec] = std::from_chars(first, last, step);
  return ec == std::errc() && end == last && step >= 0 ? step : -1;
}

}  // namespace

std::vector<fs::path> checkpoints_newest_first(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_directory(ec)) found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a > b; });
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  checkpoint::write_file_atomic(path, text);
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

// ---- state.json -------------------------------------------------------------------------------

namespace {

constexpr const char* kCheckpointFiles[] = {"model.safetensors", "state.safetensors"};

// Field readers: each throws pb::Error naming the source and the field.
const json& field(const json& object, const char* key, std::string_view source,
                  std::string_view where = "") {
  if (!object.is_object())
    fail("{}: {} is not a JSON object", source, where.empty() ? "the state" : where);
  const auto it = object.find(key);
  if (it == object.end()) fail("{}: \"{}{}\" is missing", source, where, key);
  return *it;
}

int64_t non_negative_int(const json& object, const char* key, std::string_view source,
                         std::string_view where = "") {
  const json& v = field(object, key, source, where);
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() &&
       v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
      (!v.is_number_unsigned() && v.get<int64_t>() < 0)) {
    fail("{}: \"{}{}\" must be a non-negative integer, got {}", source, where, key, v.dump());
  }
  return v.get<int64_t>();
}

double number(const json& v, std::string_view source, std::string_view key) {
  if (!v.is_number()) fail("{}: \"{}\" must be a number, got {}", source, key, v.dump());
  return v.get<double>();
}

// A uint64 written as a decimal string (JSON numbers lose precision past 2^53).
uint64_t decimal_u64(const json& object, const char* key, std::string_view source,
                     std::string_view where) {
  const json& v = field(object, key, source, where);
  uint64_t out = 0;
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return out;
  }
  fail("{}: \"{}{}\" must be a decimal unsigned 64-bit integer in a string, got {}", source, where,
       key, v.dump());
}

}  // namespace

std::string checkpoint_state_text(const CheckpointState& s) {
  json j;
  j["step"] = s.step;
  j["loader"] = {{"epoch", s.loader_epoch}, {"next_batch", s.loader_next_batch}};
  j["initial_loss"] = s.has_initial_loss ? json(s.initial_loss) : json(nullptr);
  j["last_val_error"] = s.last_val_error;
  j["best"] = json::array();
  for (const BestEntry& b : s.best)
    j["best"].push_back({{"step", b.step}, {"val_error", b.val_error}});
  j["dropout_rngs"] = json::array();
  for (const auto& r : s.dropout_rngs) {
    j["dropout_rngs"].push_back({{"module", r.module},
                                 {"seed", std::to_string(r.seed)},
                                 {"offset", std::to_string(r.offset)}});
  }
  j["files"] = json::object();
  for (const auto& [name, f] : s.files) j["files"][name] = {{"bytes", f.bytes}, {"crc32", f.crc32}};
  return j.dump(2) + "\n";
}

CheckpointState parse_checkpoint_state(std::string_view text, std::string_view source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", source, e.what());
  }
  CheckpointState s;
  s.step = non_negative_int(j, "step", source);
  const json& loader = field(j, "loader", source);
  s.loader_epoch = non_negative_int(loader, "epoch", source, "loader.");
  s.loader_next_batch = non_negative_int(loader, "next_batch", source, "loader.");
  const json& initial = field(j, "initial_loss", source);
  if (!initial.is_null()) {
    s.initial_loss = number(initial, source, "initial_loss");
    s.has_initial_loss = true;
  }
  if (j.contains("last_val_error"))
    s.last_val_error = number(j["last_val_error"], source, "last_val_error");
  const json& best = field(j, "best", source);
  if (!best.is_array()) fail("{}: \"best\" must be a list, got {}", source, best.dump());
  for (const json& b : best) {
    s.best.push_back(
        {non_negative_int(b, "step", source, "best[]."),
         number(field(b, "val_error", source, "best[]."), source, "best[].val_error")});
  }
  const json& rngs = field(j, "dropout_rngs", source);
  if (!rngs.is_array()) fail("{}: \"dropout_rngs\" must be a list, got {}", source, rngs.dump());
  for (const json& r : rngs) {
    const json& module = field(r, "module", source, "dropout_rngs[].");
    if (!module.is_string()) fail("{}: \"dropout_rngs[].module\" must be a string", source);
    s.dropout_rngs.push_back({module.get<std::string>(),
                              decimal_u64(r, "seed", source, "dropout_rngs[]."),
                              decimal_u64(r, "offset", source, "dropout_rngs[].")});
  }
  if (j.contains("files")) {  // absent in checkpoints written before the checksums
    const json& files = j["files"];
    if (!files.is_object()) fail("{}: \"files\" must be an object, got {}", source, files.dump());
    for (const auto& [name, f] : files.items()) {
      const std::string where = "files." + name + ".";
      const int64_t crc = non_negative_int(f, "crc32", source, where);
      if (crc > 0xffffffffLL) fail("{}: \"{}crc32\" {} is not a 32-bit value", source, where, crc);
      s.files[name] = {static_cast<uint64_t>(non_negative_int(f, "bytes", source, where)),
                       static_cast<uint32_t>(crc)};
    }
  }
  return s;
}

// ---- checkpoint directories -------------------------------------------------------------------

namespace {

// The size and CRC-32 of a file.
CheckpointState::File file_check(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path.string());
  CheckpointState::File out;
  std::vector<char> buffer(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(got));
    out.bytes += got;
  }
  if (in.bad()) fail("{}: read error", path.string());
  out.crc32 = static_cast<uint32_t>(crc);
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: missing or unreadable", path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

CheckpointFiles read_checkpoint(const fs::path& dir) {
  CheckpointFiles out;
  out.state = parse_checkpoint_state(read_text(dir / "state.json"), (dir / "state.json").string());
  for (const auto& [name, expected] : out.state.files) {
    const CheckpointState::File found = file_check(dir / name);
    if (found.bytes != expected.bytes) {
      fail("{}: {} bytes, state.json recorded {} (truncated or replaced)", (dir / name).string(),
           found.bytes, expected.bytes);
    }
    if (found.crc32 != expected.crc32) {
      fail("{}: CRC-32 {:08x}, state.json recorded {:08x} (corrupt)", (dir / name).string(),
           found.crc32, expected.crc32);
    }
  }
  out.model = checkpoint::load(dir / "model.safetensors");
  out.state_tensors = checkpoint::load(dir / "state.safetensors");
  return out;
}

void write_checkpoint(const fs::path& checkpoints, int64_t step,
                      const std::vector<checkpoint::NamedTensor>& model,
                      const std::map<std::string, std::string>& model_metadata,
                      const std::vector<checkpoint::NamedTensor>& state_tensors,
                      CheckpointState state) {
  if (!fs::is_directory(checkpoints)) {
    fail("{} is gone (removed while the run was writing to it?); the run stops here",
         checkpoints.string());
  }
  const fs::path final_dir = checkpoints / step_name(step);
  const fs::path tmp = final_dir.string() + ".tmp";
  try {
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    checkpoint::save(tmp / "model.safetensors", model, model_metadata);
    checkpoint::save(tmp / "state.safetensors", state_tensors);
    state.files.clear();
    for (const char* name : kCheckpointFiles) state.files[name] = file_check(tmp / name);
    write_text_atomic(tmp / "state.json", checkpoint_state_text(state));
    // An older step_N (a resumed run redoing a step after a corrupt checkpoint) goes first: the
    // rename of a directory does not replace a non-empty one.
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    checkpoint::fsync_directory(checkpoints);
  } catch (const fs::filesystem_error& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fail("cannot write checkpoint {}: {}", final_dir.string(), e.what());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

// ---- metrics.jsonl and config.toml ------------------------------------------------------------

std::string metrics_up_to(std::string_view text, int64_t step, std::string_view source) {
  std::string kept;
  std::size_t line_number = 0;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t newline = text.find('\n', begin);
    const bool last = newline == std::string_view::npos || newline + 1 == text.size();
    const std::string_view line =
        text.substr(begin, newline == std::string_view::npos ? text.npos : newline - begin);
    begin = newline == std::string_view::npos ? text.size() : newline + 1;
    ++line_number;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      if (last) break;  // the line a kill cut short
      fail("{}:{}: not valid JSON ({})", source, line_number, e.what());
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      fail("{}:{}: a metrics line needs an integer \"step\"", source, line_number);
    }
    if (j["step"].get<int64_t>() <= step) {
      kept.append(line);
      kept += '\n';
    }
  }
  return kept;
}

std::string config_differences(const config::Config& stored, const config::Config& now) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& key : stored.keys()) {
    seen.insert(key);
    const std::string was = config::format_value(stored.value(key));
    if (!now.has(key)) {
      out.push_back(fmt::format("{} ({} in the run, not a key now)", key, was));
      continue;
    }
    const std::string is = config::format_value(now.value(key));
    if (was != is) out.push_back(fmt::format("{} ({} in the run, {} now)", key, was, is));
  }
  for (const std::string& key : now.keys()) {
    if (!seen.contains(key)) {
      out.push_back(
          fmt::format("{} (not in the run, {} now)", key, config::format_value(now.value(key))));
    }
  }
  std::string text;
  for (const std::string& d : out) text += (text.empty() ? "" : ", ") + d;
  return text;
}

}  // namespace pb::train
