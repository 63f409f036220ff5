#pragma once
// The body of fuzz_idx and fuzz_idx_gzip.
#include <zlib.h>

#include "fuzz/fuzz_input.h"
#include "runtime/core/error.h"
#include "runtime/data/dataset.h"
#include "runtime/data/idx.h"

namespace pb::fuzz {

// gzip(1)-format compression of `bytes`; with `split_member`, two concatenated members.
inline std::string gzip(std::string_view bytes) {
  z_stream z{};
  deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, bytes.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

inline void fuzz_idx(std::string_view input, bool compress, const char* name) {
  namespace fs = std::filesystem;
  const fs::path& dir = scratch_dir(name);
  const std::string suffix = compress ? ".gz" : "";
  auto store = [&](const fs::path& path, std::string_view bytes) {
    write_bytes(path, compress ? std::string_view(gzip(bytes)) : bytes);
  };
  constexpr std::string_view kSeparator =
      "\xff"
      "SPL";
  const std::size_t split = input.find(kSeparator);
  try {
    if (split == std::string_view::npos) {
      const fs::path file = dir / ("single" + suffix);
      store(file, input);
      (void)data::read_idx(file);
    } else {
      for (const char* stale : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"}) {
        std::error_code ec;
        fs::remove(dir / stale, ec);
        fs::remove(dir / (std::string(stale) + ".gz"), ec);
      }
      store(dir / ("train-images-idx3-ubyte" + suffix), input.substr(0, split));
      store(dir / ("train-labels-idx1-ubyte" + suffix), input.substr(split + kSeparator.size()));
      (void)data::load_fashion_mnist(dir, "train");
    }
  } catch (const pb::Error&) {
  }
}

}  // namespace pb::fuzz
