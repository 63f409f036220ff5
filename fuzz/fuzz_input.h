#pragma once
// Helpers shared by the fuzz targets: a private scratch directory per process (the parsers under
// test read files), and the rule of every target: a parser may throw pb::Error (its one-line
// message for bad input) and nothing else; any other exception, crash, leak or sanitizer report
// is a bug (libFuzzer reports an escaping exception as a crash).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace pb::fuzz {

// /tmp/pb-fuzz-<name>-<pid>/, created once; its files are overwritten by each input.
inline const std::filesystem::path& scratch_dir(const char* name) {
  static const std::filesystem::path dir = [&] {
    const std::filesystem::path d =
        std::filesystem::temp_directory_path() /
        (std::string("pb-fuzz-") + name + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string_view as_text(const uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace pb::fuzz
