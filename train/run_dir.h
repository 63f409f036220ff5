#pragma once
// The files of a run directory (the interface the tuning layer reads; see trainer.h), and the
// layer that makes them durable and checks them before they are trusted:
//   - every file is written atomically (runtime/checkpoint/atomic_file.h: temporary file, fsync,
//     rename, fsync of the directory), so a kill or a full disk never leaves a partial file
//     under a final name;
//   - a checkpoint directory is assembled as checkpoints/step_N.tmp/ and renamed into place
//     whole; its state.json, written last, records the size and CRC-32 of the other files;
//   - --resume reads a checkpoint whole (read_checkpoint) before it touches the model, so an
//     incomplete or corrupt one is reported and the previous one used instead.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint/safetensors.h"
#include "runtime/config/config.h"

namespace pb::train {

// "step_00001200": the name of a checkpoint directory (checkpoints/) or file (best/).
std::string step_name(int64_t step);
// The checkpoint directories under `dir` (step_N, no .tmp suffix), newest first.
std::vector<std::filesystem::path> checkpoints_newest_first(const std::filesystem::path& dir);
// Writes `text` atomically (temporary file, fsync, rename, fsync of the directory).
void write_text_atomic(const std::filesystem::path& path, const std::string& text);
// The JSON in `path`; throws pb::Error naming the file when it is missing or invalid.
nlohmann::json read_json(const std::filesystem::path& path);
// The resolved config as {"section": {"key": value}}: the values that ran, for summary.json.
nlohmann::json config_json(const config::Config& config);

// One entry of the best/ list: a step and its validation error.
struct BestEntry {
  int64_t step;
  double val_error;
};

// A checkpoint's state.json: everything but tensors that a resumed run needs.
struct CheckpointState {
  int64_t step = 0;
  int64_t loader_epoch = 0;
  int64_t loader_next_batch = 0;
  double initial_loss = 0;
  bool has_initial_loss = false;  // false before the first step's loss was seen
  double last_val_error = -1;
  std::vector<BestEntry> best;
  struct Rng {
    std::string module;
    uint64_t seed = 0, offset = 0;
  };
  std::vector<Rng> dropout_rngs;
  struct File {
    uint64_t bytes = 0;
    uint32_t crc32 = 0;
  };
  std::map<std::string, File> files;  // the checkpoint's other files by name
};

// state.json's text and its parser. parse_checkpoint_state checks every field (types, ranges)
// and throws pb::Error naming `source` and the field; it never crashes on any input.
std::string checkpoint_state_text(const CheckpointState& state);
CheckpointState parse_checkpoint_state(std::string_view text, std::string_view source);

// A checkpoint read whole and checked: both safetensors files load, state.json parses, and each
// file has the size and CRC-32 that state.json recorded.
struct CheckpointFiles {
  checkpoint::Loaded model;
  checkpoint::Loaded state_tensors;
  CheckpointState state;
};
CheckpointFiles read_checkpoint(const std::filesystem::path& dir);

// Writes checkpoints/step_N/ as above: model.safetensors, state.safetensors, then state.json
// with their sizes and CRC-32s; renames the directory into place (replacing an older one of the
// same step) and fsyncs checkpoints/. On an error the temporary directory is removed and no
// step_N is left half written; the error names the file and the reason.
void write_checkpoint(const std::filesystem::path& checkpoints, int64_t step,
                      const std::vector<checkpoint::NamedTensor>& model,
                      const std::map<std::string, std::string>& model_metadata,
                      const std::vector<checkpoint::NamedTensor>& state_tensors,
                      CheckpointState state);

// metrics.jsonl text cut to the lines of steps <= `step`: what a resumed run keeps. A last line
// that a kill left unfinished (no newline, or not JSON) is dropped; any other bad line throws
// pb::Error naming `source` and the line number.
std::string metrics_up_to(std::string_view text, int64_t step, std::string_view source);

// "optimizer.learning_rate (0.1 in the run, 0.05 now), train.seed (...)": the keys whose values
// differ between two resolved configs, or the keys only one of them has. Empty when they agree.
std::string config_differences(const config::Config& stored, const config::Config& now);

}  // namespace pb::train
