// IDX files through the gzip path: the input (as fuzz_idx takes it) is gzip-compressed before it
// is read, so the IDX parser is explored behind zlib's inflate, concatenated members included.
#include "fuzz/fuzz_idx_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  pb::fuzz::fuzz_idx(pb::fuzz::as_text(data, size), /*gzip=*/true, "idx-gzip");
  return 0;
}
