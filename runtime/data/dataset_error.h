#pragma once
// DatasetError: the one exception type every dataset reader in pb::data throws. Its message
// names the file and says what is wrong with it, e.g.
//   idx file "/data/train-images-idx3-ubyte.gz": truncated data: expected 47040000 bytes of
//   data, found 1200
// so that a user can act on it without a debugger.

#include <filesystem>
#include <string>
#include <string_view>

#include "runtime/core/error.h"

namespace pb::data {

class DatasetError : public pb::Error {
 public:
  using pb::Error::Error;

  // Builds the message `<kind> "<path>": <problem>`, e.g. kind = "idx file".
  DatasetError(std::string_view kind, const std::filesystem::path& path, std::string_view problem)
      : pb::Error(std::string(kind) + " \"" + path.string() + "\": " + std::string(problem)) {}
};

}  // namespace pb::data
