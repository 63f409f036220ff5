#pragma once
// safetensors files: the checkpoint format Hugging Face's `safetensors` library reads.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the raw
// little-endian tensor data.
//   {"__metadata__": {"step": "100"},
//    "fc.weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]}, ...}
// Offsets are relative to the start of the data section; tensors are stored back to back in
// header order with no gaps, and the header is padded with spaces to a multiple of 8 bytes so
// that the data section starts 8-byte aligned.
//
// load() validates everything before it trusts a byte, and every problem is a one-line
// CheckpointError naming the file: "ckpt.safetensors: tensor 'fc.bias': data_offsets [40, 44]
// hold 4 bytes, but shape (10) of F32 needs 40".
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/tensor.h"

namespace pb::checkpoint {

// A checkpoint that cannot be written, read or matched to its targets.
class CheckpointError : public pb::Error {
 public:
  using pb::Error::Error;
};

using NamedTensor = std::pair<std::string, Tensor>;

// Writes `tensors` (in the given order) and `metadata` to `path` atomically: the bytes go to
// `path.tmp`, which is fsync'ed and then renamed over `path`, so a crash leaves either the old
// file or the new one. Device tensors are copied to the host. Empty, duplicate or reserved
// ("__metadata__") names are rejected.
void save(const std::filesystem::path& path, const std::vector<NamedTensor>& tensors,
          const std::map<std::string, std::string>& metadata = {});

struct Loaded {
  std::filesystem::path path;        // the file it came from (named in load_into's messages)
  std::vector<NamedTensor> tensors;  // host tensors, in the order of their data in the file
  std::map<std::string, std::string> metadata;

  // The tensor called `name`, or nullptr.
  const Tensor* find(std::string_view name) const;
};

// Reads and validates a safetensors file. Tensors of dtypes playbook cannot hold (I64, U8, ...)
// are reported rather than converted.
Loaded load(const std::filesystem::path& path);

// Copies the loaded tensors into existing ones (a model's state(), say; any device). Every target
// must be present with the same shape and dtype, and no loaded tensor may be left over; nothing
// is copied unless everything matches. `what` names the owner of the targets in messages:
//   "ckpt.safetensors: layer1.0.conv1.weight has shape (16, 16, 3, 3), the model expects
//   (32, 16, 3, 3)"
void load_into(const Loaded& loaded, const std::vector<NamedTensor>& targets,
               std::string_view what = "model");

// "F32", "F64", "I32", "F16", "BF16": the safetensors spelling of a dtype.
std::string_view safetensors_dtype(DType dtype);

}  // namespace pb::checkpoint
