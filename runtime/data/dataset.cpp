// Dataset loaders. MNIST-style directories go through load_idx_split (idx.cpp); CIFAR batches are
// fixed-size records read here: every file's size is checked against the record size before any
// is read, so a truncated download fails fast with the file's name.

#include "runtime/data/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <system_error>

#include "kernels/philox.h"
#include "runtime/core/error.h"
#include "runtime/data/idx.h"

namespace pb::data {
namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<std::string>& names, std::string_view separator = ", ") {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += separator;
    out += names[i];
  }
  return out;
}

// Throws unless split is "train" or "test".
void check_split(std::string_view kind, const fs::path& dir, std::string_view split) {
  if (split != "train" && split != "test") {
    throw DatasetError(kind, dir,
                       "unknown split \"" + std::string(split) + "\" (expected train or test)");
  }
}

// Throws unless dir is an existing directory holding at least one of `files`. hint is appended
// to the "wrong directory" message.
void check_directory(std::string_view kind, const fs::path& dir,
                     const std::vector<std::string>& files, const std::string& hint) {
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (status.type() == fs::file_type::not_found) {
    throw DatasetError(kind, dir, "directory not found; expected " + join(files) + " in it");
  }
  if (status.type() != fs::file_type::directory) {
    throw DatasetError(kind, dir,
                       "is not a directory; expected a directory holding " + join(files));
  }
  for (const std::string& name : files) {
    if (fs::exists(dir / name, ec)) return;
  }
  throw DatasetError(kind, dir, "wrong directory: it holds none of " + join(files) + hint);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// ---- CIFAR ----------------------------------------------------------------------------------

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;  // 3072

struct CifarFormat {
  std::string name;                      // "cifar10"
  std::string title;                     // "CIFAR-10"
  int64_t label_bytes;                   // label bytes before the pixels of each record
  std::vector<std::string> label_names;  // one per label byte: "label", or "coarse/fine label"
  std::vector<int64_t> label_classes;    // classes of each label byte
  std::vector<std::string> train_files;
  std::vector<std::string> test_files;
  std::string folder;        // the folder the official tarball extracts to
  std::string other_title;   // the sibling format, for a hint when its files are found
  std::string other_marker;  // a file of the sibling format
  std::string other_folder;

  int64_t record_bytes() const { return label_bytes + kCifarPixels; }
  std::string record_layout() const {
    return label_bytes == 1 ? "1 label byte + 3072 pixel bytes"
                            : "coarse and fine label bytes + 3072 pixel bytes";
  }
};

const CifarFormat& cifar10_format() {
  static const CifarFormat format{"cifar10",
                                  "CIFAR-10",
                                  1,
                                  {"label"},
                                  {10},
                                  {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                   "data_batch_4.bin", "data_batch_5.bin"},
                                  {"test_batch.bin"},
                                  "cifar-10-batches-bin",
                                  "CIFAR-100",
                                  "train.bin",
                                  "cifar-100-binary"};
  return format;
}

const CifarFormat& cifar100_format() {
  static const CifarFormat format{"cifar100",
                                  "CIFAR-100",
                                  2,
                                  {"coarse label", "fine label"},
                                  {20, 100},
                                  {"train.bin"},
                                  {"test.bin"},
                                  "cifar-100-binary",
                                  "CIFAR-10",
                                  "data_batch_1.bin",
                                  "cifar-10-batches-bin"};
  return format;
}

// Reads the records of `format`'s split from dir. keep_label: which label byte becomes the label.
ImageDataset load_cifar(const CifarFormat& format, const fs::path& dir, std::string_view split,
                        int64_t keep_label, const std::string& dataset_name) {
  const std::string dataset_kind = format.name + " dataset";
  const std::string file_kind = format.name + " file";
  check_split(dataset_kind, dir, split);

  std::vector<std::string> all_files = format.train_files;
  all_files.insert(all_files.end(), format.test_files.begin(), format.test_files.end());
  std::string hint;
  std::error_code ec;
  if (fs::is_directory(dir / format.folder, ec)) {
    hint = " (did you mean \"" + (dir / format.folder).string() + "\"?)";
  } else if (fs::exists(dir / format.other_marker, ec)) {
    hint = " (it holds " + format.other_marker + ": a " + format.other_title + " directory?)";
  } else if (fs::is_directory(dir / format.other_folder, ec)) {
    hint = " (it holds " + format.other_folder + ", which is " + format.other_title + ")";
  }
  check_directory(dataset_kind, dir, all_files, hint);

  const std::vector<std::string>& files = split == "train" ? format.train_files : format.test_files;
  const int64_t record = format.record_bytes();

  // Sizes first: a missing or truncated file fails before anything is read.
  std::vector<int64_t> records(files.size());
  int64_t total = 0;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const fs::path path = dir / files[f];
    const fs::file_status status = fs::status(path, ec);
    if (status.type() == fs::file_type::not_found) {
      throw DatasetError(file_kind, path,
                         "file not found; the " + std::string(split) + " split expects " +
                             join(files) + " in \"" + dir.string() + "\"");
    }
    if (status.type() != fs::file_type::regular) {
      throw DatasetError(file_kind, path, "is not a regular file");
    }
    const auto size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec) throw DatasetError(file_kind, path, "cannot read the file size: " + ec.message());
    if (size == 0) {
      throw DatasetError(file_kind, path,
                         "file is empty; expected " + std::to_string(record) + "-byte records (" +
                             format.record_layout() + ")");
    }
    if (size % record != 0) {
      throw DatasetError(file_kind, path,
                         "file size " + std::to_string(size) + " is not a multiple of the " +
                             std::to_string(record) + "-byte record (" + format.record_layout() +
                             "): truncated, or not a " + format.title + " batch file");
    }
    records[f] = size / record;
    total += records[f];
  }

  ImageDataset out;
  out.name = dataset_name;
  out.count = total;
  out.channels = 3;
  out.height = kCifarSide;
  out.width = kCifarSide;
  out.num_classes = format.label_classes[static_cast<std::size_t>(keep_label)];
  out.pixels.resize(static_cast<std::size_t>(total * kCifarPixels));
  out.labels.resize(static_cast<std::size_t>(total));

  // One file at a time, in chunks of whole records.
  constexpr int64_t kChunkRecords = 1024;
  std::vector<uint8_t> buffer(static_cast<std::size_t>(kChunkRecords * record));
  int64_t example = 0;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const fs::path path = dir / files[f];
    errno = 0;
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) {
      throw DatasetError(file_kind, path,
                         std::string("cannot open for reading: ") +
                             (errno != 0 ? std::strerror(errno) : "unknown error"));
    }
    for (int64_t r0 = 0; r0 < records[f]; r0 += kChunkRecords) {
      const int64_t n = std::min(kChunkRecords, records[f] - r0);
      const auto want = static_cast<std::size_t>(n * record);
      if (std::fread(buffer.data(), 1, want, file.get()) != want) {
        throw DatasetError(file_kind, path,
                           "read error at record " + std::to_string(r0) +
                               (std::ferror(file.get()) ? std::string(": ") + std::strerror(errno)
                                                        : std::string(": file shrank")));
      }
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* rec = buffer.data() + r * record;
        for (int64_t b = 0; b < format.label_bytes; ++b) {
          const int64_t classes = format.label_classes[static_cast<std::size_t>(b)];
          if (rec[b] >= classes) {
            throw DatasetError(file_kind, path,
                               "record " + std::to_string(r0 + r) + " has " +
                                   format.label_names[static_cast<std::size_t>(b)] + " " +
                                   std::to_string(rec[b]) + ", out of range for " + format.title +
                                   "'s " + std::to_string(classes) + " classes (0-" +
                                   std::to_string(classes - 1) + "): label out of range (not a " +
                                   format.title + " file?)");
          }
        }
        out.labels[static_cast<std::size_t>(example)] = rec[keep_label];
        std::memcpy(out.pixels.data() + example * kCifarPixels, rec + format.label_bytes,
                    kCifarPixels);
        ++example;
      }
    }
  }
  return out;
}

// ---- MNIST-style ----------------------------------------------------------------------------

ImageDataset load_idx_dataset(const std::string& name, const fs::path& dir,
                              std::string_view split) {
  const std::string kind = name + " dataset";
  check_split(kind, dir, split);
  std::vector<std::string> expected;
  for (const char* prefix : {"train", "t10k"}) {
    for (const char* part : {"-images-idx3-ubyte", "-labels-idx1-ubyte"}) {
      expected.push_back(std::string(prefix) + part);
      expected.push_back(std::string(prefix) + part + ".gz");
    }
  }
  std::string hint;
  std::error_code ec;
  if (fs::exists(dir / "data_batch_1.bin", ec)) hint = " (it holds data_batch_1.bin: CIFAR-10?)";
  check_directory(kind, dir, expected, hint);

  LabeledImages images = load_idx_split(dir, split);
  constexpr int32_t kClasses = 10;
  for (std::size_t i = 0; i < images.labels.size(); ++i) {
    const int32_t label = images.labels[i];
    if (label < 0 || label >= kClasses) {
      throw DatasetError("idx file", images.labels_file,
                         "example " + std::to_string(i) + " has label " + std::to_string(label) +
                             ", out of range for " + name +
                             "'s 10 classes (0-9): label out of "
                             "range");
    }
  }
  ImageDataset out;
  out.name = name;
  out.count = images.count;
  out.channels = images.channels;
  out.height = images.height;
  out.width = images.width;
  out.num_classes = kClasses;
  out.pixels = std::move(images.pixels);
  out.labels = std::move(images.labels);
  return out;
}

}  // namespace

// ---- loaders --------------------------------------------------------------------------------

ImageDataset load_fashion_mnist(const std::filesystem::path& dir, std::string_view split) {
  return load_idx_dataset("fashion_mnist", dir, split);
}

ImageDataset load_mnist(const std::filesystem::path& dir, std::string_view split) {
  return load_idx_dataset("mnist", dir, split);
}

ImageDataset load_cifar10(const std::filesystem::path& dir, std::string_view split) {
  return load_cifar(cifar10_format(), dir, split, 0, "cifar10");
}

ImageDataset load_cifar100(const std::filesystem::path& dir, std::string_view split, bool fine) {
  return load_cifar(cifar100_format(), dir, split, fine ? 1 : 0,
                    fine ? "cifar100" : "cifar100_coarse");
}

ImageDataset make_synthetic(int64_t count, int64_t channels, int64_t height, int64_t width,
                            int64_t num_classes, uint64_t seed) {
  if (count < 0) fail("make_synthetic: count must be >= 0, got {}", count);
  if (channels < 1 || height < 1 || width < 1) {
    fail("make_synthetic: channels, height and width must be >= 1, got ({}, {}, {})", channels,
         height, width);
  }
  if (num_classes < 1 || num_classes > (int64_t{1} << 31) - 1) {
    fail("make_synthetic: num_classes must be in [1, 2^31), got {}", num_classes);
  }
  constexpr int64_t kMaxSide = int64_t{1} << 20;
  constexpr int64_t kMaxBytes = int64_t{1} << 36;
  if (channels > kMaxSide || height > kMaxSide || width > kMaxSide ||
      channels * height * width > kMaxBytes / std::max<int64_t>(count, 1)) {
    fail("make_synthetic: {} examples of ({}, {}, {}) is more than 2^36 bytes", count, channels,
         height, width);
  }
  const int64_t example = channels * height * width;

  ImageDataset out;
  out.name = "synthetic";
  out.count = count;
  out.channels = channels;
  out.height = height;
  out.width = width;
  out.num_classes = num_classes;
  const auto nbytes = static_cast<std::size_t>(count * example);
  out.pixels.resize(nbytes);
  // Pixels: 16 bytes per Philox call (epoch 0); labels: one call each (epoch 1).
  for (std::size_t block = 0; block * 16 < nbytes; ++block) {
    const DataRandom r = data_random(seed, DataStream::kSynthetic, 0, block);
    uint8_t bytes[16];
    std::memcpy(bytes, r.v, sizeof(bytes));
    const std::size_t n = std::min<std::size_t>(16, nbytes - block * 16);
    std::memcpy(out.pixels.data() + block * 16, bytes, n);
  }
  out.labels.resize(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const DataRandom r = data_random(seed, DataStream::kSynthetic, 1, static_cast<uint64_t>(i));
    out.labels[static_cast<std::size_t>(i)] =
        static_cast<int32_t>(r.u64() % static_cast<uint64_t>(num_classes));
  }
  return out;
}

const std::vector<std::string>& known_dataset_names() {
  static const std::vector<std::string> names = {"fashion_mnist", "mnist",           "cifar10",
                                                 "cifar100",      "cifar100_coarse", "synthetic"};
  return names;
}

std::string canonical_dataset_name(std::string_view name) {
  std::string canonical(name);
  std::replace(canonical.begin(), canonical.end(), '-', '_');
  const std::vector<std::string>& known = known_dataset_names();
  if (std::find(known.begin(), known.end(), canonical) == known.end()) {
    throw DatasetError("unknown dataset \"" + std::string(name) +
                       "\"; known datasets: " + join(known));
  }
  return canonical;
}

ImageDataset make_dataset(std::string_view name, const std::filesystem::path& dir,
                          std::string_view split, const SyntheticSpec& synthetic) {
  const std::string canonical = canonical_dataset_name(name);
  if (canonical == "fashion_mnist") return load_fashion_mnist(dir, split);
  if (canonical == "mnist") return load_mnist(dir, split);
  if (canonical == "cifar10") return load_cifar10(dir, split);
  if (canonical == "cifar100") return load_cifar100(dir, split, true);
  if (canonical == "cifar100_coarse") return load_cifar100(dir, split, false);
  // synthetic
  check_split("synthetic dataset", dir, split);
  return make_synthetic(synthetic.count, synthetic.channels, synthetic.height, synthetic.width,
                        synthetic.num_classes, synthetic.seed + (split == "test" ? 1 : 0));
}

// ---- validation split ---------------------------------------------------------------------

SplitIndices carve_validation(int64_t count, int64_t validation_size, uint64_t seed) {
  if (count < 0) fail("carve_validation: count must be >= 0, got {}", count);
  if (validation_size < 0 || validation_size >= count) {
    fail(
        "carve_validation: validation_size {} is out of range for a training set of {} examples "
        "(expected 0 <= validation_size < {})",
        validation_size, count, count);
  }
  const std::vector<int64_t> perm = random_permutation(count, seed, DataStream::kValidation, 0);
  SplitIndices out;
  out.validation.assign(perm.begin(), perm.begin() + validation_size);
  out.train.assign(perm.begin() + validation_size, perm.end());
  std::sort(out.validation.begin(), out.validation.end());
  std::sort(out.train.begin(), out.train.end());
  return out;
}

std::vector<int64_t> iota_indices(int64_t n) {
  std::vector<int64_t> out(static_cast<std::size_t>(std::max<int64_t>(n, 0)));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(i);
  return out;
}

// ---- random streams -----------------------------------------------------------------------

DataRandom data_random(uint64_t seed, DataStream stream, uint32_t epoch, uint64_t index) {
  const kernels::Philox4x32 r =
      kernels::philox4x32_10(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                             epoch, static_cast<uint32_t>(stream), static_cast<uint32_t>(seed),
                             static_cast<uint32_t>(seed >> 32));
  return {{r.v[0], r.v[1], r.v[2], r.v[3]}};
}

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed, DataStream stream,
                                        uint32_t epoch) {
  std::vector<int64_t> perm = iota_indices(n);
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t r = data_random(seed, stream, epoch, static_cast<uint64_t>(i)).u64();
    const auto j = static_cast<int64_t>(r % static_cast<uint64_t>(i + 1));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  return perm;
}

}  // namespace pb::data
