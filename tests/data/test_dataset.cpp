// Datasets: CIFAR-10/100 batches and MNIST-style IDX files written into a temp dir by the test
// (a few records each), one test per failure mode (each message must name the file or directory
// and the problem), lookup by name, synthetic data, the validation split, and the installed
// Fashion-MNIST train split when it is present.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/data/dataset.h"

namespace pb::data {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    for (int attempt = 0;; ++attempt) {
      path_ = fs::temp_directory_path() /
              ("pb_test_dataset_" + std::to_string(stamp) + "_" + std::to_string(counter++));
      if (fs::create_directory(path_)) break;
      if (attempt > 100) throw std::runtime_error("cannot create a temp dir");
    }
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_raw(const fs::path& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// Runs fn, expects an exception of type E whose message contains every fragment.
template <typename E = DatasetError>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception with \"" << *fragments.begin() << "\"";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(what.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << what;
    }
  }
}

// ---- CIFAR files --------------------------------------------------------------------------

// Pixel byte p (0..3071) of record r in file f.
std::uint8_t cifar_pixel(int f, int r, int p) {
  return static_cast<std::uint8_t>(f * 31 + r * 7 + p);
}

// A CIFAR batch file of `records` records: `label_bytes` label bytes from label(r), then pixels.
Bytes cifar_records(int f, int records, const std::function<Bytes(int)>& label) {
  Bytes out;
  for (int r = 0; r < records; ++r) {
    const Bytes l = label(r);
    out.insert(out.end(), l.begin(), l.end());
    for (int p = 0; p < 3072; ++p) out.push_back(cifar_pixel(f, r, p));
  }
  return out;
}

std::uint8_t cifar10_label(int f, int r) {
  return static_cast<std::uint8_t>((f + 3 * r) % 10);
}

// data_batch_1..5.bin with 2, 1, 3, 1, 2 records and test_batch.bin (file 0) with 3.
const int kTrainRecords[5] = {2, 1, 3, 1, 2};

void write_cifar10(const fs::path& dir) {
  for (int f = 1; f <= 5; ++f) {
    write_raw(
        dir / ("data_batch_" + std::to_string(f) + ".bin"),
        cifar_records(f, kTrainRecords[f - 1], [&](int r) { return Bytes{cifar10_label(f, r)}; }));
  }
  write_raw(dir / "test_batch.bin",
            cifar_records(0, 3, [](int r) { return Bytes{cifar10_label(0, r)}; }));
}

// train.bin (file 1, 4 records) and test.bin (file 0, 2 records): coarse r % 20, fine 90 + r.
void write_cifar100(const fs::path& dir) {
  const auto label = [](int r) {
    return Bytes{static_cast<std::uint8_t>((r * 7) % 20), static_cast<std::uint8_t>(90 + r)};
  };
  write_raw(dir / "train.bin", cifar_records(1, 4, label));
  write_raw(dir / "test.bin", cifar_records(0, 2, label));
}

TEST(Cifar10, LoadsTrainAcrossFiveBatches) {
  TempDir dir;
  write_cifar10(dir.path());
  const ImageDataset d = load_cifar10(dir.path(), "train");
  EXPECT_EQ(d.name, "cifar10");
  EXPECT_EQ(d.count, 9);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.height, 32);
  EXPECT_EQ(d.width, 32);
  EXPECT_EQ(d.num_classes, 10);
  ASSERT_EQ(d.pixels.size(), 9u * 3072u);
  ASSERT_EQ(d.labels.size(), 9u);
  int example = 0;
  for (int f = 1; f <= 5; ++f) {
    for (int r = 0; r < kTrainRecords[f - 1]; ++r, ++example) {
      EXPECT_EQ(d.labels[static_cast<std::size_t>(example)], cifar10_label(f, r));
      // (c, y, x) = (2, 5, 7): channel-major, byte 2 * 1024 + 5 * 32 + 7 of the record's pixels.
      const int p = 2 * 1024 + 5 * 32 + 7;
      EXPECT_EQ(d.image(example)[p], cifar_pixel(f, r, p));
      EXPECT_EQ(d.image(example)[0], cifar_pixel(f, r, 0));
      EXPECT_EQ(d.image(example)[3071], cifar_pixel(f, r, 3071));
    }
  }
}

TEST(Cifar10, LoadsTestBatch) {
  TempDir dir;
  write_cifar10(dir.path());
  const ImageDataset d = load_cifar10(dir.path(), "test");
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.labels, (std::vector<std::int32_t>{0, 3, 6}));
  EXPECT_EQ(d.image(2)[100], cifar_pixel(0, 2, 100));
}

TEST(Cifar100, FineAndCoarseLabels) {
  TempDir dir;
  write_cifar100(dir.path());
  const ImageDataset fine = load_cifar100(dir.path(), "train");
  EXPECT_EQ(fine.name, "cifar100");
  EXPECT_EQ(fine.count, 4);
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_EQ(fine.labels, (std::vector<std::int32_t>{90, 91, 92, 93}));
  EXPECT_EQ(fine.image(3)[1234], cifar_pixel(1, 3, 1234));
  const ImageDataset coarse = load_cifar100(dir.path(), "train", /*fine=*/false);
  EXPECT_EQ(coarse.name, "cifar100_coarse");
  EXPECT_EQ(coarse.num_classes, 20);
  EXPECT_EQ(coarse.labels, (std::vector<std::int32_t>{0, 7, 14, 1}));
  EXPECT_EQ(coarse.pixels, fine.pixels);
  const ImageDataset test = load_cifar100(dir.path(), "test");
  EXPECT_EQ(test.count, 2);
  EXPECT_EQ(test.image(1)[0], cifar_pixel(0, 1, 0));
}

TEST(CifarErrors, MissingDirectory) {
  TempDir dir;
  const fs::path absent = dir / "absent";
  expect_error([&] { load_cifar10(absent, "train"); },
               {absent.string(), "directory not found", "data_batch_1.bin", "test_batch.bin"});
}

TEST(CifarErrors, FileInsteadOfDirectory) {
  TempDir dir;
  write_raw(dir / "data_batch_1.bin", Bytes(3073, 0));
  expect_error([&] { load_cifar10(dir / "data_batch_1.bin", "train"); },
               {(dir / "data_batch_1.bin").string(), "is not a directory"});
}

TEST(CifarErrors, WrongDirectoryListsTheExpectedFiles) {
  TempDir dir;
  expect_error([&] { load_cifar10(dir.path(), "train"); },
               {dir.path().string(), "wrong directory", "data_batch_1.bin", "data_batch_5.bin",
                "test_batch.bin"});
  expect_error([&] { load_cifar100(dir.path(), "test"); },
               {dir.path().string(), "wrong directory", "train.bin", "test.bin"});
}

TEST(CifarErrors, WrongDirectoryHints) {
  TempDir dir;
  fs::create_directory(dir / "cifar-10-batches-bin");
  expect_error([&] { load_cifar10(dir.path(), "train"); },
               {"wrong directory", "did you mean", (dir / "cifar-10-batches-bin").string()});
  TempDir c100;
  write_cifar100(c100.path());
  expect_error([&] { load_cifar10(c100.path(), "train"); },
               {c100.path().string(), "wrong directory", "train.bin", "CIFAR-100"});
  TempDir c10;
  write_cifar10(c10.path());
  expect_error([&] { load_cifar100(c10.path(), "train"); },
               {c10.path().string(), "wrong directory", "CIFAR-10"});
}

TEST(CifarErrors, MissingBatchFileNamesWhatWasExpectedWhere) {
  TempDir dir;
  write_cifar10(dir.path());
  fs::remove(dir / "data_batch_3.bin");
  expect_error([&] { load_cifar10(dir.path(), "train"); },
               {(dir / "data_batch_3.bin").string(), "file not found", "train split expects",
                "data_batch_1.bin", "data_batch_5.bin", "in \"" + dir.path().string() + "\""});
  // The test split is still complete.
  EXPECT_EQ(load_cifar10(dir.path(), "test").count, 3);
  fs::remove(dir / "test_batch.bin");
  expect_error([&] { load_cifar10(dir.path(), "test"); },
               {(dir / "test_batch.bin").string(), "file not found", "test split expects"});
}

TEST(CifarErrors, TruncatedRecord) {
  TempDir dir;
  write_cifar10(dir.path());
  write_raw(dir / "data_batch_2.bin", Bytes(30000, 1));
  expect_error([&] { load_cifar10(dir.path(), "train"); },
               {(dir / "data_batch_2.bin").string(),
                "file size 30000 is not a multiple of the 3073-byte record"});
  TempDir c100;
  write_cifar100(c100.path());
  write_raw(c100 / "test.bin", Bytes(3073 * 2, 1));
  expect_error(
      [&] { load_cifar100(c100.path(), "test"); },
      {(c100 / "test.bin").string(), "file size 6146 is not a multiple of the 3074-byte record"});
}

TEST(CifarErrors, EmptyFile) {
  TempDir dir;
  write_cifar10(dir.path());
  write_raw(dir / "test_batch.bin", {});
  expect_error([&] { load_cifar10(dir.path(), "test"); },
               {(dir / "test_batch.bin").string(), "file is empty", "3073-byte records"});
}

TEST(CifarErrors, LabelOutOfRange) {
  TempDir dir;
  write_cifar10(dir.path());
  write_raw(dir / "data_batch_4.bin", cifar_records(4, 3, [](int r) {
              return Bytes{static_cast<std::uint8_t>(r == 2 ? 12 : 1)};
            }));
  expect_error([&] { load_cifar10(dir.path(), "train"); },
               {(dir / "data_batch_4.bin").string(), "record 2 has label 12", "label out of range",
                "10 classes (0-9)"});
}

TEST(CifarErrors, Cifar100LabelsOutOfRange) {
  TempDir dir;
  write_cifar100(dir.path());
  write_raw(dir / "train.bin", cifar_records(1, 2, [](int r) {
              return Bytes{1, static_cast<std::uint8_t>(r == 1 ? 100 : 5)};
            }));
  expect_error([&] { load_cifar100(dir.path(), "train"); },
               {(dir / "train.bin").string(), "record 1 has fine label 100", "label out of range"});
  write_raw(dir / "train.bin", cifar_records(1, 1, [](int) { return Bytes{20, 5}; }));
  // A corrupt coarse label is caught even when the fine labels are the ones kept.
  expect_error([&] { load_cifar100(dir.path(), "train"); },
               {(dir / "train.bin").string(), "record 0 has coarse label 20", "20 classes"});
}

TEST(CifarErrors, UnknownSplit) {
  TempDir dir;
  write_cifar10(dir.path());
  expect_error([&] { load_cifar10(dir.path(), "validation"); },
               {dir.path().string(), "unknown split \"validation\"", "train or test"});
}

// ---- MNIST-style directories --------------------------------------------------------------

Bytes make_idx(const std::vector<std::uint32_t>& dims, const Bytes& payload) {
  Bytes out = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<std::uint8_t>(d >> shift));
  }
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// train split of `labels.size()` 2x3 images with pixel (n, y, x) = 10 n + 3 y + x.
void write_idx_train(const fs::path& dir, const Bytes& labels) {
  const auto n = static_cast<std::uint32_t>(labels.size());
  Bytes pixels;
  for (std::uint32_t i = 0; i < n; ++i) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 3; ++x) pixels.push_back(static_cast<std::uint8_t>(10 * i + 3 * y + x));
    }
  }
  write_raw(dir / "train-images-idx3-ubyte", make_idx({n, 2, 3}, pixels));
  write_raw(dir / "train-labels-idx1-ubyte", make_idx({n}, labels));
}

TEST(FashionMnist, LoadsIdxDirectory) {
  TempDir dir;
  write_idx_train(dir.path(), {3, 9, 0, 1});
  const ImageDataset d = load_fashion_mnist(dir.path(), "train");
  EXPECT_EQ(d.name, "fashion_mnist");
  EXPECT_EQ(d.count, 4);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 2);
  EXPECT_EQ(d.width, 3);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.labels, (std::vector<std::int32_t>{3, 9, 0, 1}));
  EXPECT_EQ(d.image(2)[1 * 3 + 2], 10 * 2 + 3 + 2);
  EXPECT_EQ(load_mnist(dir.path(), "train").name, "mnist");
}

TEST(FashionMnist, LabelOutOfRange) {
  TempDir dir;
  write_idx_train(dir.path(), {3, 10, 0});
  expect_error([&] { load_fashion_mnist(dir.path(), "train"); },
               {(dir / "train-labels-idx1-ubyte").string(), "example 1 has label 10",
                "label out of range", "10 classes"});
}

TEST(FashionMnist, WrongAndMissingDirectory) {
  TempDir dir;
  expect_error([&] { load_fashion_mnist(dir.path(), "train"); },
               {dir.path().string(), "wrong directory", "train-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte.gz"});
  write_cifar10(dir.path());
  expect_error([&] { load_fashion_mnist(dir.path(), "train"); }, {"wrong directory", "CIFAR-10"});
  expect_error([&] { load_fashion_mnist(dir / "absent", "train"); },
               {(dir / "absent").string(), "directory not found"});
}

TEST(FashionMnist, MissingFileOfASplit) {
  TempDir dir;
  write_idx_train(dir.path(), {1, 2});
  expect_error([&] { load_fashion_mnist(dir.path(), "test"); },
               {(dir / "t10k-images-idx3-ubyte.gz").string(), "file not found",
                (dir / "t10k-images-idx3-ubyte").string()});
}

TEST(FashionMnist, RealTrainSplit) {
  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " is not installed (dataset-fashion-mnist)";
  const ImageDataset d = load_fashion_mnist(dir, "train");
  EXPECT_EQ(d.count, 60000);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 28);
  EXPECT_EQ(d.width, 28);
  EXPECT_EQ(d.num_classes, 10);
  ASSERT_EQ(d.pixels.size(), 60000u * 784u);
  std::vector<std::int64_t> counts(10, 0);
  for (const std::int32_t label : d.labels) ++counts[static_cast<std::size_t>(label)];
  EXPECT_EQ(counts, std::vector<std::int64_t>(10, 6000));
  // The mean pixel matches the published statistic used for normalisation (0.2860).
  double sum = 0;
  for (const std::uint8_t p : d.pixels) sum += p;
  EXPECT_NEAR(sum / static_cast<double>(d.pixels.size()) / 255.0, 0.2860, 5e-4);
}

// ---- by name ------------------------------------------------------------------------------

TEST(MakeDataset, ByName) {
  TempDir dir;
  write_cifar10(dir.path());
  EXPECT_EQ(make_dataset("cifar10", dir.path(), "train").count, 9);
  TempDir idx;
  write_idx_train(idx.path(), {1, 2, 3});
  EXPECT_EQ(make_dataset("fashion-mnist", idx.path(), "train").name, "fashion_mnist");
  EXPECT_EQ(make_dataset("mnist", idx.path(), "train").count, 3);
  TempDir c100;
  write_cifar100(c100.path());
  EXPECT_EQ(make_dataset("cifar100", c100.path(), "train").num_classes, 100);
  EXPECT_EQ(make_dataset("cifar100_coarse", c100.path(), "train").num_classes, 20);
}

TEST(MakeDataset, UnknownNameListsTheKnownOnes) {
  expect_error([] { make_dataset("imagenet", "/nowhere", "train"); },
               {"unknown dataset \"imagenet\"", "fashion_mnist", "mnist", "cifar10", "cifar100",
                "cifar100_coarse", "synthetic"});
  EXPECT_EQ(known_dataset_names().size(), 6u);
}

TEST(MakeDataset, SyntheticSplitsDiffer) {
  SyntheticSpec spec;
  spec.count = 20;
  spec.channels = 1;
  spec.height = 4;
  spec.width = 4;
  spec.seed = 5;
  const ImageDataset train = make_dataset("synthetic", "", "train", spec);
  const ImageDataset test = make_dataset("synthetic", "", "test", spec);
  EXPECT_EQ(train.count, 20);
  EXPECT_NE(train.pixels, test.pixels);
  EXPECT_EQ(train.pixels, make_synthetic(20, 1, 4, 4, 10, 5).pixels);
  expect_error([&] { make_dataset("synthetic", "", "val", spec); }, {"unknown split \"val\""});
}

// ---- synthetic ----------------------------------------------------------------------------

TEST(Synthetic, DeterministicShapesAndRanges) {
  const ImageDataset a = make_synthetic(1000, 3, 5, 7, 13, 42);
  const ImageDataset b = make_synthetic(1000, 3, 5, 7, 13, 42);
  const ImageDataset c = make_synthetic(1000, 3, 5, 7, 13, 43);
  EXPECT_EQ(a.name, "synthetic");
  EXPECT_EQ(a.count, 1000);
  EXPECT_EQ(a.example_size(), 105);
  EXPECT_EQ(a.num_classes, 13);
  ASSERT_EQ(a.pixels.size(), 1000u * 105u);
  ASSERT_EQ(a.labels.size(), 1000u);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.pixels, c.pixels);
  EXPECT_NE(a.labels, c.labels);
  std::vector<int> label_counts(13, 0);
  for (const std::int32_t l : a.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 13);
    ++label_counts[static_cast<std::size_t>(l)];
  }
  for (const int n : label_counts) EXPECT_GT(n, 40);  // about 77 each
  double mean = 0;
  for (const std::uint8_t p : a.pixels) mean += p;
  mean /= static_cast<double>(a.pixels.size());
  EXPECT_NEAR(mean, 127.5, 2.0);
  // A prefix of a larger dataset is the smaller one: pixels are a function of their offset.
  const ImageDataset small = make_synthetic(10, 3, 5, 7, 13, 42);
  EXPECT_TRUE(std::equal(small.pixels.begin(), small.pixels.end(), a.pixels.begin()));
}

TEST(Synthetic, BadArguments) {
  expect_error<ValueError>([] { make_synthetic(-1, 1, 1, 1, 2, 0); }, {"count"});
  expect_error<ValueError>([] { make_synthetic(4, 0, 1, 1, 2, 0); }, {"channels"});
  expect_error<ValueError>([] { make_synthetic(4, 1, 1, 1, 0, 0); }, {"num_classes"});
  expect_error<ValueError>([] { make_synthetic(int64_t{1} << 30, 3, 512, 512, 2, 0); },
                           {"2^36 bytes"});
  EXPECT_EQ(make_synthetic(0, 1, 2, 2, 3, 0).pixels.size(), 0u);
}

// ---- validation split ---------------------------------------------------------------------

TEST(ValidationSplit, DisjointCoveringSortedDeterministic) {
  const SplitIndices s = carve_validation(1000, 100, 7);
  ASSERT_EQ(s.validation.size(), 100u);
  ASSERT_EQ(s.train.size(), 900u);
  EXPECT_TRUE(std::is_sorted(s.validation.begin(), s.validation.end()));
  EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
  std::vector<std::int64_t> all = s.train;
  all.insert(all.end(), s.validation.begin(), s.validation.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, iota_indices(1000));  // disjoint and covering
  const SplitIndices again = carve_validation(1000, 100, 7);
  EXPECT_EQ(again.validation, s.validation);
  EXPECT_EQ(again.train, s.train);
  const SplitIndices other = carve_validation(1000, 100, 8);
  EXPECT_NE(other.validation, s.validation);
  // A random subset, not a block: it spans the range.
  EXPECT_LT(s.validation.front(), 100);
  EXPECT_GT(s.validation.back(), 900);
  const SplitIndices none = carve_validation(10, 0, 7);
  EXPECT_TRUE(none.validation.empty());
  EXPECT_EQ(none.train, iota_indices(10));
}

TEST(ValidationSplit, SizeOutOfRange) {
  expect_error<ValueError>([] { carve_validation(100, 100, 0); },
                           {"validation_size 100 is out of range", "100 examples"});
  expect_error<ValueError>([] { carve_validation(100, -1, 0); },
                           {"validation_size -1 is out of range"});
  expect_error<ValueError>([] { carve_validation(60000, 70000, 0); },
                           {"validation_size 70000", "60000 examples"});
}

TEST(RandomStreams, PermutationIsAPermutationPerEpoch) {
  const std::vector<std::int64_t> p0 = random_permutation(500, 3, DataStream::kShuffle, 0);
  const std::vector<std::int64_t> p1 = random_permutation(500, 3, DataStream::kShuffle, 1);
  std::vector<std::int64_t> sorted = p0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, iota_indices(500));
  EXPECT_NE(p0, p1);
  EXPECT_EQ(p0, random_permutation(500, 3, DataStream::kShuffle, 0));
  EXPECT_NE(p0, random_permutation(500, 3, DataStream::kValidation, 0));
  EXPECT_TRUE(random_permutation(0, 3, DataStream::kShuffle, 0).empty());
  // Streams are distinct counters under one key.
  const DataRandom a = data_random(1, DataStream::kAugment, 2, 3);
  const DataRandom b = data_random(1, DataStream::kShuffle, 2, 3);
  EXPECT_NE(a.u64(), b.u64());
}

}  // namespace
}  // namespace pb::data
