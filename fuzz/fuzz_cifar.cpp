// CIFAR binary batches: the first byte picks CIFAR-10 (even) or CIFAR-100 (odd); the rest is the
// test batch file (test_batch.bin / test.bin), loaded as the test split.
#include "fuzz/fuzz_input.h"
#include "runtime/core/error.h"
#include "runtime/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& dir = pb::fuzz::scratch_dir("cifar");
  const bool cifar100 = data[0] % 2 == 1;
  pb::fuzz::write_bytes(dir / (cifar100 ? "test.bin" : "test_batch.bin"),
                        pb::fuzz::as_text(data + 1, size - 1));
  try {
    if (cifar100) {
      (void)pb::data::load_cifar100(dir, "test", data[0] % 4 == 1);
    } else {
      (void)pb::data::load_cifar10(dir, "test");
    }
  } catch (const pb::Error&) {
  }
  return 0;
}
