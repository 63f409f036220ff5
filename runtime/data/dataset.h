#pragma once
// Image classification datasets held in host memory as uint8 pixels, and the random streams of
// the data pipeline.
//
// Every dataset is loaded whole into an ImageDataset: pixels (count,C,H,W) uint8, contiguous, and
// labels (count) int32 in [0, num_classes). Loaders by name (make_dataset) cover MNIST and
// Fashion-MNIST (IDX files, idx.h), CIFAR-10 and CIFAR-100 (the "binary version" batches), and a
// synthetic dataset of random pixels for throughput work. Every bad input throws DatasetError
// naming the file (or directory) and the problem.
//
// Randomness (shuffles, the validation split, augmentation, synthetic data) comes from one
// Philox4x32-10 stream family (kernels/philox.h): key = seed, 128-bit counter = (index, epoch,
// stream tag). A draw is a pure function of those numbers, so results never depend on the order
// in which threads ask for them.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/data/dataset_error.h"

namespace pb::data {

struct ImageDataset {
  std::string name;  // "fashion_mnist", "cifar10", ... (as make_dataset knows it)
  int64_t count = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_classes = 0;
  std::vector<uint8_t> pixels;  // (count,C,H,W) uint8, contiguous
  std::vector<int32_t> labels;  // (count) int32 in [0, num_classes)

  // C*H*W: the bytes of one example.
  int64_t example_size() const { return channels * height * width; }
  // Example i's pixels, (C,H,W).
  const uint8_t* image(int64_t i) const {
    return pixels.data() + static_cast<std::size_t>(i * example_size());
  }
};

// ---- loaders --------------------------------------------------------------------------------
// split is "train" or "test".

// <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (see load_idx_split); 10 classes.
ImageDataset load_fashion_mnist(const std::filesystem::path& dir, std::string_view split);
ImageDataset load_mnist(const std::filesystem::path& dir, std::string_view split);

// CIFAR-10 binary version (the cifar-10-batches-bin folder): train = data_batch_1.bin ..
// data_batch_5.bin, test = test_batch.bin; each record is 1 label byte then 3072 pixel bytes
// (R, G, B planes of 32x32, row-major). Any number of records per file is accepted.
ImageDataset load_cifar10(const std::filesystem::path& dir, std::string_view split);

// CIFAR-100 binary version (the cifar-100-binary folder): train.bin / test.bin; each record is a
// coarse label byte (20 classes), a fine label byte (100 classes), then 3072 pixel bytes.
// fine picks which label is kept.
ImageDataset load_cifar100(const std::filesystem::path& dir, std::string_view split,
                           bool fine = true);

// count random examples: uniform pixels in [0, 255] and uniform labels in [0, num_classes), a
// pure function of the arguments. For throughput work; nothing in it is learnable.
ImageDataset make_synthetic(int64_t count, int64_t channels, int64_t height, int64_t width,
                            int64_t num_classes, uint64_t seed);

// The shape of the "synthetic" dataset make_dataset builds; split "test" uses seed + 1.
struct SyntheticSpec {
  int64_t count = 10000;
  int64_t channels = 3;
  int64_t height = 32;
  int64_t width = 32;
  int64_t num_classes = 10;
  uint64_t seed = 0;
};

// The names make_dataset accepts: fashion_mnist, mnist, cifar10, cifar100 (fine labels),
// cifar100_coarse, synthetic. '-' is read as '_' ("fashion-mnist" works).
const std::vector<std::string>& known_dataset_names();
// name with '-' read as '_' when it is known; throws DatasetError listing the known names.
std::string canonical_dataset_name(std::string_view name);

// Loads a dataset by name. dir is ignored for "synthetic".
ImageDataset make_dataset(std::string_view name, const std::filesystem::path& dir,
                          std::string_view split, const SyntheticSpec& synthetic = {});

// ---- validation split ---------------------------------------------------------------------

// Indices into a training set of `count` examples: a fixed-seed random subset of
// validation_size examples held out for validation, and the rest. Both lists are sorted, disjoint
// and together cover [0, count). 0 <= validation_size < count, else ValueError.
struct SplitIndices {
  std::vector<int64_t> train;
  std::vector<int64_t> validation;
};
SplitIndices carve_validation(int64_t count, int64_t validation_size, uint64_t seed);

// [0, n)
std::vector<int64_t> iota_indices(int64_t n);

// ---- random streams -----------------------------------------------------------------------

// The stream tags of the data pipeline, so that no two uses share counters.
enum class DataStream : uint32_t {
  kShuffle = 0x5348u,     // epoch permutations
  kValidation = 0x5641u,  // carve_validation
  kAugment = 0x4147u,     // per-example augmentation draws
  kSynthetic = 0x5359u,   // make_synthetic
};

// The four 32-bit words of Philox4x32-10 with key = seed and counter =
// (index low, index high, epoch, stream): draw `index` of `epoch` in `stream`.
struct DataRandom {
  uint32_t v[4];
  uint64_t u64() const { return (uint64_t{v[0]} << 32) | v[1]; }
};
DataRandom data_random(uint64_t seed, DataStream stream, uint32_t epoch, uint64_t index);

// A uniformly random permutation of [0, n): Fisher-Yates where the swap partner of position i
// (from n-1 down to 1) is data_random(seed, stream, epoch, i).u64() % (i + 1); the modulo bias
// is below n / 2^64.
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed, DataStream stream,
                                        uint32_t epoch);

}  // namespace pb::data
