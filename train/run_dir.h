#pragma once
// The files of a run directory (the interface the tuning layer reads; see trainer.h):
// checkpoint names, the latest complete checkpoint, atomic text writes, JSON reads, and the
// resolved config as JSON for summary.json.
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/config/config.h"

namespace pb::train {

// "step_00001200": the name of a checkpoint directory (checkpoints/) or file (best/).
std::string step_name(int64_t step);
// The latest complete checkpoint directory under `dir` (step_N without a .tmp suffix), or an
// empty path.
std::filesystem::path latest_checkpoint(const std::filesystem::path& dir);
// Writes `text` to a temporary file beside `path`, then renames it over `path`.
void write_text_atomic(const std::filesystem::path& path, const std::string& text);
// The JSON in `path`; throws pb::Error naming the file when it is missing or invalid.
nlohmann::json read_json(const std::filesystem::path& path);
// The resolved config as {"section": {"key": value}}: the values that ran, for summary.json.
nlohmann::json config_json(const config::Config& config);

}  // namespace pb::train
