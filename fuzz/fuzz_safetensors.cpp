// safetensors files (checkpoints): checkpoint::load on the input as a file, and load_into a
// small fixed set of targets when it loads.
#include "fuzz/fuzz_input.h"
#include "runtime/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = pb::fuzz::scratch_dir("safetensors") / "input.safetensors";
  pb::fuzz::write_bytes(path, pb::fuzz::as_text(data, size));
  try {
    const pb::checkpoint::Loaded loaded = pb::checkpoint::load(path);
    const std::vector<pb::checkpoint::NamedTensor> targets = {{"w", pb::zeros(pb::Shape{2, 2})},
                                                              {"b", pb::zeros(pb::Shape{2})}};
    pb::checkpoint::load_into(loaded, targets, "fuzz model");
  } catch (const pb::Error&) {
  }
  return 0;
}
