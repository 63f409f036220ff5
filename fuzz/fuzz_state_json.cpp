// A checkpoint's state.json, read on --resume (train::parse_checkpoint_state), and the
// metrics.jsonl cut a resumed run makes (train::metrics_up_to).
#include "fuzz/fuzz_input.h"
#include "runtime/core/error.h"
#include "train/run_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text = pb::fuzz::as_text(data, size);
  try {
    const pb::train::CheckpointState s = pb::train::parse_checkpoint_state(text, "state.json");
    // What parses must write back to the same state.
    const pb::train::CheckpointState again =
        pb::train::parse_checkpoint_state(pb::train::checkpoint_state_text(s), "rewritten");
    if (again.step != s.step || again.best.size() != s.best.size() ||
        again.dropout_rngs.size() != s.dropout_rngs.size() || again.files.size() != s.files.size())
      __builtin_trap();
  } catch (const pb::Error&) {
  }
  try {
    (void)pb::train::metrics_up_to(text, 100, "metrics.jsonl");
  } catch (const pb::Error&) {
  }
  return 0;
}
