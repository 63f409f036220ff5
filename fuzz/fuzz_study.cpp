// The study file: tuning::parse_study on TOML text, with the training config's rules (the
// search space checked against its key specs, the base config resolved). The study's directory
// holds base.toml, a copy of configs/mlp_fashion_mnist.toml.
#include "fuzz/fuzz_input.h"
#include "runtime/core/error.h"
#include "train/config.h"
#include "tuning/study_spec.h"

namespace {

const char* kBase = R"(
[model]
name = "mlp"
hidden = [16]
[data]
dataset = "synthetic"
[optimizer]
name = "momentum"
learning_rate = 0.05
[schedule]
name = "cosine"
[train]
batch_size = 8
max_train_steps = 100
)";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const std::filesystem::path dir = [] {
    const auto d = pb::fuzz::scratch_dir("study");
    pb::fuzz::write_bytes(d / "base.toml", kBase);
    return d;
  }();
  static const pb::tuning::TrainRules rules{
      &pb::train::schema(),
      [](const std::filesystem::path& base, const std::vector<std::string>& overrides) {
        (void)pb::train::resolve(base, overrides);
      }};
  try {
    (void)pb::tuning::parse_study(pb::fuzz::as_text(data, size), dir / "study.toml", dir, &rules);
  } catch (const pb::Error&) {
  }
  return 0;
}
