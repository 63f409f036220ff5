#pragma once
// IDX reader: the file format of MNIST and Fashion-MNIST.
//
// An IDX file is
//   bytes 0-1   0x00 0x00
//   byte  2     element type (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
//               0x0D float32, 0x0E float64)
//   byte  3     number of dimensions n
//   4*n bytes   dimension sizes, big-endian uint32
//   data        prod(dims) elements, row-major, nothing after it
// and may be stored gzip'd (detected by its 0x1f 0x8b magic, not by the file name). Only the
// unsigned-byte type is supported: it is what MNIST-style image and label files use.
//
// Every failure (missing or unreadable file, bad magic, unsupported type, truncated header or
// data, trailing bytes, corrupt gzip stream, absurd dimensions) throws DatasetError with a
// message that names the file and the problem.

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "runtime/data/dataset_error.h"

namespace pb::data {

// The largest number of elements an IDX file may declare (2^31); more is treated as corrupt.
inline constexpr std::int64_t kIdxMaxElements = std::int64_t{1} << 31;

// One IDX array of unsigned bytes. data: prod(dims) elements, row-major.
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

// Reads an IDX file of unsigned bytes, raw or gzip'd. Throws DatasetError.
IdxArray read_idx(const std::filesystem::path& path);

// An image classification split. pixels: (count,channels,height,width) uint8, contiguous;
// labels: (count) int32.
struct LabeledImages {
  std::int64_t count = 0;
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<std::uint8_t> pixels;
  std::vector<std::int32_t> labels;
  std::int32_t num_classes = 0;  // max label + 1 (0 for an empty split)
  std::filesystem::path images_file;
  std::filesystem::path labels_file;
};

// Loads the "train" or "test" split of an MNIST-style directory:
//   <dir>/<prefix>-images-idx3-ubyte[.gz] and <dir>/<prefix>-labels-idx1-ubyte[.gz],
// prefix "train" for split "train" and "t10k" for split "test"; the .gz file is preferred when
// both exist. Images must be 3-d (count,height,width), labels 1-d (count), with equal counts;
// channels is 1. Throws DatasetError naming the file (or the directory and split).
LabeledImages load_idx_split(const std::filesystem::path& dir, std::string_view split);

// How often each label in [0, num_classes) occurs. (num_classes)
std::vector<std::int64_t> class_counts(const LabeledImages& images);

}  // namespace pb::data
