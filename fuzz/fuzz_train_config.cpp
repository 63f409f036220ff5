// The training config: train::resolve_text on TOML text with --set overrides. The input is the
// TOML text, then NUL-separated overrides ("section.key=value").
#include "fuzz/fuzz_input.h"
#include "runtime/core/error.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input = pb::fuzz::as_text(data, size);
  std::size_t end = input.find('\0');
  const std::string_view text = input.substr(0, end);
  std::vector<std::string> overrides;
  while (end != std::string_view::npos) {
    const std::size_t next = input.find('\0', end + 1);
    overrides.emplace_back(input.substr(end + 1, next == input.npos ? input.npos : next - end - 1));
    end = next;
  }
  try {
    const pb::config::Config config = pb::train::resolve_text(text, "fuzz.toml", overrides);
    (void)pb::train::train_config(config);
    (void)config.to_toml();
  } catch (const pb::Error&) {
  }
  return 0;
}
