// IDX files (MNIST, Fashion-MNIST), plain or gzip'd (detected by magic): read_idx on the input
// as a file; an input with the separator "\xffSPL" is an image file and a label file, loaded as
// a Fashion-MNIST training split (count, shape and label checks).
#include "fuzz/fuzz_idx_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  pb::fuzz::fuzz_idx(pb::fuzz::as_text(data, size), /*gzip=*/false, "idx");
  return 0;
}
