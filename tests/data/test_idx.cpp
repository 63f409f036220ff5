// IDX reader: round trips through small raw and gzip'd files written here, one test per failure
// mode (each message must name the file and the problem), split loading, and the installed
// Fashion-MNIST test split when it is present.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/data/idx.h"

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
              ("pb_test_idx_" + std::to_string(stamp) + "_" + std::to_string(counter++));
      if (fs::create_directory(path_)) break;
      if (attempt > 100) throw std::runtime_error("cannot create a temp dir");
    }
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// The bytes of an IDX file: magic 00 00 type ndims, big-endian dims, then the payload.
Bytes make_idx(const std::vector<std::uint32_t>& dims, const Bytes& payload,
               std::uint8_t type = 0x08) {
  Bytes out = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) {
    out.push_back(static_cast<std::uint8_t>(d >> 24));
    out.push_back(static_cast<std::uint8_t>(d >> 16));
    out.push_back(static_cast<std::uint8_t>(d >> 8));
    out.push_back(static_cast<std::uint8_t>(d));
  }
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes iota_bytes(std::size_t n, std::uint8_t start = 0) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(start + i);
  return out;
}

void write_raw(const fs::path& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// Writes bytes as one gzip member; mode "ab" appends a second member.
void write_gz(const fs::path& path, const Bytes& bytes, const char* mode = "wb") {
  gzFile f = gzopen(path.c_str(), mode);
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

Bytes read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs fn, expects a DatasetError whose message contains the path and every fragment.
void expect_dataset_error(const std::function<void()>& fn, const fs::path& path,
                          std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected DatasetError for " << path;
  } catch (const DatasetError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path.string()), std::string::npos)
        << "message does not name " << path << ": " << what;
    for (const std::string& fragment : fragments) {
      EXPECT_NE(what.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << what;
    }
  }
}

void expect_read_error(const fs::path& path, std::initializer_list<std::string> fragments) {
  expect_dataset_error([&] { read_idx(path); }, path, fragments);
}

TEST(Idx, DatasetErrorIsARuntimeError) {
  static_assert(std::is_base_of_v<std::runtime_error, DatasetError>);
  const DatasetError e("idx file", fs::path("/x/y"), "broken");
  EXPECT_STREQ(e.what(), "idx file \"/x/y\": broken");
}

TEST(Idx, ReadsRawFile) {
  TempDir dir;
  const fs::path path = dir / "a-idx3-ubyte";
  write_raw(path, make_idx({2, 3, 4}, iota_bytes(24, 7)));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 3, 4}));
  EXPECT_EQ(a.data, iota_bytes(24, 7));
}

TEST(Idx, ReadsGzipFile) {
  TempDir dir;
  const fs::path path = dir / "a-idx3-ubyte.gz";
  write_gz(path, make_idx({3, 5, 2}, iota_bytes(30, 100)));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{3, 5, 2}));
  EXPECT_EQ(a.data, iota_bytes(30, 100));
}

TEST(Idx, DetectsGzipByMagicNotByName) {
  TempDir dir;
  const fs::path path = dir / "labels-idx1-ubyte";  // no .gz suffix
  write_gz(path, make_idx({5}, {9, 8, 7, 6, 5}));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{5}));
  EXPECT_EQ(a.data, (Bytes{9, 8, 7, 6, 5}));
}

TEST(Idx, ReadsConcatenatedGzipMembers) {
  TempDir dir;
  const fs::path path = dir / "two-members.gz";
  const Bytes whole = make_idx({4, 4}, iota_bytes(16));
  write_gz(path, Bytes(whole.begin(), whole.begin() + 10));
  write_gz(path, Bytes(whole.begin() + 10, whole.end()), "ab");
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{4, 4}));
  EXPECT_EQ(a.data, iota_bytes(16));
}

TEST(Idx, ReadsLargerGzipFileAcrossBufferBoundaries) {
  TempDir dir;
  const fs::path path = dir / "big.gz";
  Bytes payload(300 * 1000);
  std::uint32_t state = 12345;
  for (std::uint8_t& b : payload) {
    state = state * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>(state >> 24);
  }
  write_gz(path, make_idx({300, 1000}, payload));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{300, 1000}));
  EXPECT_EQ(a.data, payload);
}

TEST(Idx, ReadsEmptyArray) {
  TempDir dir;
  const fs::path path = dir / "empty-idx3-ubyte";
  write_raw(path, make_idx({0, 28, 28}, {}));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{0, 28, 28}));
  EXPECT_TRUE(a.data.empty());
}

TEST(IdxErrors, MissingFile) {
  TempDir dir;
  expect_read_error(dir / "nope-idx3-ubyte", {"file not found"});
}

TEST(IdxErrors, DirectoryIsNotAFile) {
  TempDir dir;
  fs::create_directory(dir / "sub");
  expect_read_error(dir / "sub", {"is a directory"});
}

TEST(IdxErrors, UnreadableFile) {
  TempDir dir;
  const fs::path path = dir / "locked-idx1-ubyte";
  write_raw(path, make_idx({1}, {1}));
  fs::permissions(path, fs::perms::none);
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
    GTEST_SKIP() << "running with privileges that ignore file permissions";
  }
  expect_read_error(path, {"cannot open for reading", "Permission denied"});
}

TEST(IdxErrors, EmptyFile) {
  TempDir dir;
  const fs::path path = dir / "empty";
  write_raw(path, {});
  expect_read_error(path, {"file is empty"});
}

TEST(IdxErrors, WrongMagicPrintsTheBytesFound) {
  TempDir dir;
  const fs::path path = dir / "zip-idx3-ubyte";
  write_raw(path, {0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0});
  expect_read_error(path, {"wrong magic", "50 4b 03 04"});
}

TEST(IdxErrors, WrongMagicInsideGzip) {
  TempDir dir;
  const fs::path path = dir / "text.gz";
  write_gz(path, {'h', 'e', 'l', 'l', 'o'});
  expect_read_error(path, {"wrong magic", "68 65 6c 6c", "after decompression"});
}

TEST(IdxErrors, UnsupportedElementType) {
  TempDir dir;
  const fs::path path = dir / "float-idx1-ubyte";
  write_raw(path, make_idx({1}, {0, 0, 0, 0}, 0x0D));
  expect_read_error(path, {"unsupported element type 0x0d", "float32", "0x08 (unsigned byte)"});
  const fs::path unknown = dir / "unknown-idx1-ubyte";
  write_raw(unknown, make_idx({1}, {0}, 0x42));
  expect_read_error(unknown, {"unsupported element type 0x42", "not an IDX type"});
}

TEST(IdxErrors, TruncatedMagic) {
  TempDir dir;
  const fs::path path = dir / "short";
  write_raw(path, {0, 0, 8});
  expect_read_error(path, {"truncated header", "4-byte magic", "found 3 bytes"});
}

TEST(IdxErrors, TruncatedDimensions) {
  TempDir dir;
  const fs::path path = dir / "short-dims";
  Bytes bytes = make_idx({10, 28, 28}, {});
  bytes.resize(4 + 9);  // two and a quarter of the three dimension sizes
  write_raw(path, bytes);
  expect_read_error(path, {"truncated header", "expected 12 bytes", "found 9"});
}

TEST(IdxErrors, ZeroDimensions) {
  TempDir dir;
  const fs::path path = dir / "scalar";
  write_raw(path, {0, 0, 8, 0});
  expect_read_error(path, {"0 dimensions"});
}

TEST(IdxErrors, TruncatedDataRaw) {
  TempDir dir;
  const fs::path path = dir / "cut-idx3-ubyte";
  write_raw(path, make_idx({2, 3, 4}, iota_bytes(20)));
  expect_read_error(path, {"truncated data", "expected 24 bytes of data, found 20"});
}

TEST(IdxErrors, TruncatedDataGzip) {
  TempDir dir;
  const fs::path path = dir / "cut-idx3-ubyte.gz";
  write_gz(path, make_idx({2, 3, 4}, iota_bytes(20)));
  expect_read_error(path, {"truncated data", "expected 24 bytes of data, found 20"});
}

TEST(IdxErrors, TrailingGarbageRaw) {
  TempDir dir;
  const fs::path path = dir / "long-idx1-ubyte";
  write_raw(path, make_idx({3}, {1, 2, 3, 4, 5, 6}));
  expect_read_error(path, {"trailing garbage", "3 bytes after the 3 bytes of data"});
}

TEST(IdxErrors, TrailingGarbageInsideGzip) {
  TempDir dir;
  const fs::path path = dir / "long-idx1-ubyte.gz";
  write_gz(path, make_idx({3}, {1, 2, 3, 4}));
  expect_read_error(path, {"trailing garbage", "1 bytes after the 3 bytes of data"});
}

TEST(IdxErrors, TrailingGarbageAfterGzipStream) {
  TempDir dir;
  const fs::path path = dir / "tail.gz";
  write_gz(path, make_idx({3}, {1, 2, 3}));
  Bytes bytes = read_file(path);
  bytes.insert(bytes.end(), {'j', 'u', 'n', 'k'});
  write_raw(path, bytes);
  expect_read_error(path, {"trailing garbage", "4 bytes that are not gzip data"});
}

TEST(IdxErrors, CorruptGzipStream) {
  TempDir dir;
  const fs::path path = dir / "corrupt.gz";
  write_gz(path, make_idx({64, 64}, iota_bytes(4096)));
  Bytes bytes = read_file(path);
  ASSERT_GT(bytes.size(), 20u);
  bytes[10] = 0xff;  // the first byte of the deflate data: an invalid block type
  bytes[11] ^= 0xff;
  write_raw(path, bytes);
  expect_read_error(path, {"corrupt gzip stream"});
}

TEST(IdxErrors, GzipChecksumMismatch) {
  TempDir dir;
  const fs::path path = dir / "crc.gz";
  write_gz(path, make_idx({8}, iota_bytes(8)));
  Bytes bytes = read_file(path);
  bytes[bytes.size() - 8] ^= 0x01;  // CRC-32 in the gzip trailer
  write_raw(path, bytes);
  expect_read_error(path, {"corrupt gzip stream", "incorrect data check"});
}

TEST(IdxErrors, TruncatedGzipStream) {
  TempDir dir;
  const fs::path path = dir / "cut.gz";
  write_gz(path, make_idx({64, 64}, iota_bytes(4096)));
  Bytes bytes = read_file(path);
  ASSERT_GT(bytes.size(), 30u);
  bytes.erase(bytes.end() - 12, bytes.end());
  write_raw(path, bytes);
  expect_read_error(path, {"corrupt gzip stream", "truncated .gz file"});
}

TEST(IdxErrors, AbsurdDimensions) {
  TempDir dir;
  const fs::path overflow = dir / "overflow";
  write_raw(overflow, make_idx({0xffffffffu, 0xffffffffu, 0xffffffffu}, {1, 2, 3}));
  expect_read_error(overflow, {"absurd dimensions", "4294967295 x 4294967295", "2^31"});
  const fs::path big = dir / "big";
  write_raw(big, make_idx({65536, 32769}, {1, 2, 3}));
  expect_read_error(big, {"absurd dimensions", "65536 x 32769"});
}

// ---- load_idx_split -----------------------------------------------------------------------

// Writes a split of `count` images of h x w with pixel (n,y,x) = n + y + x and label n % classes.
void write_split(const TempDir& dir, const std::string& prefix, std::uint32_t count,
                 std::uint32_t h, std::uint32_t w, int classes, bool gz_images, bool gz_labels) {
  Bytes pixels;
  Bytes labels;
  for (std::uint32_t n = 0; n < count; ++n) {
    for (std::uint32_t y = 0; y < h; ++y) {
      for (std::uint32_t x = 0; x < w; ++x) pixels.push_back(static_cast<std::uint8_t>(n + y + x));
    }
    labels.push_back(static_cast<std::uint8_t>(static_cast<int>(n) % classes));
  }
  const std::string images_name = prefix + "-images-idx3-ubyte";
  const std::string labels_name = prefix + "-labels-idx1-ubyte";
  if (gz_images) {
    write_gz(dir / (images_name + ".gz"), make_idx({count, h, w}, pixels));
  } else {
    write_raw(dir / images_name, make_idx({count, h, w}, pixels));
  }
  if (gz_labels) {
    write_gz(dir / (labels_name + ".gz"), make_idx({count}, labels));
  } else {
    write_raw(dir / labels_name, make_idx({count}, labels));
  }
}

TEST(IdxSplit, LoadsTrainSplitMixingGzipAndRaw) {
  TempDir dir;
  write_split(dir, "train", 6, 3, 2, 3, /*gz_images=*/true, /*gz_labels=*/false);
  const LabeledImages s = load_idx_split(dir.path(), "train");
  EXPECT_EQ(s.count, 6);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 3);
  EXPECT_EQ(s.width, 2);
  ASSERT_EQ(s.pixels.size(), 6u * 3u * 2u);
  EXPECT_EQ(s.pixels[((4 * 1 + 0) * 3 + 2) * 2 + 1], 4 + 2 + 1);  // (n=4,c=0,y=2,x=1)
  EXPECT_EQ(s.labels, (std::vector<std::int32_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(s.num_classes, 3);
  EXPECT_EQ(class_counts(s), (std::vector<std::int64_t>{2, 2, 2}));
  EXPECT_EQ(s.images_file, dir / "train-images-idx3-ubyte.gz");
  EXPECT_EQ(s.labels_file, dir / "train-labels-idx1-ubyte");
}

TEST(IdxSplit, TestSplitUsesT10kPrefixAndPrefersGzip) {
  TempDir dir;
  write_split(dir, "t10k", 4, 2, 2, 2, true, true);
  // Raw files beside the .gz ones hold different (wrong) content and must be ignored.
  write_raw(dir / "t10k-images-idx3-ubyte", make_idx({1, 1, 1}, {0}));
  write_raw(dir / "t10k-labels-idx1-ubyte", make_idx({1}, {0}));
  const LabeledImages s = load_idx_split(dir.path(), "test");
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.labels, (std::vector<std::int32_t>{0, 1, 0, 1}));
  EXPECT_EQ(s.num_classes, 2);
}

TEST(IdxSplit, LabelsUpTo255AreAccepted) {
  TempDir dir;
  write_raw(dir / "train-images-idx3-ubyte", make_idx({2, 1, 1}, {0, 0}));
  write_raw(dir / "train-labels-idx1-ubyte", make_idx({2}, {255, 3}));
  const LabeledImages s = load_idx_split(dir.path(), "train");
  EXPECT_EQ(s.labels, (std::vector<std::int32_t>{255, 3}));
  EXPECT_EQ(s.num_classes, 256);
  EXPECT_EQ(class_counts(s)[255], 1);
}

TEST(IdxSplit, ImageLabelCountMismatch) {
  TempDir dir;
  write_raw(dir / "train-images-idx3-ubyte", make_idx({4, 2, 2}, iota_bytes(16)));
  write_raw(dir / "train-labels-idx1-ubyte", make_idx({5}, iota_bytes(5)));
  expect_dataset_error(
      [&] { load_idx_split(dir.path(), "train"); }, dir / "train-labels-idx1-ubyte",
      {"5 labels", "4 images", "count mismatch", (dir / "train-images-idx3-ubyte").string()});
}

TEST(IdxSplit, MissingLabelsFileIsNamed) {
  TempDir dir;
  write_gz(dir / "t10k-images-idx3-ubyte.gz", make_idx({1, 1, 1}, {0}));
  expect_dataset_error([&] { load_idx_split(dir.path(), "test"); },
                       dir / "t10k-labels-idx1-ubyte.gz",
                       {"file not found", (dir / "t10k-labels-idx1-ubyte").string()});
}

TEST(IdxSplit, WrongRankIsNamed) {
  TempDir dir;
  write_raw(dir / "train-images-idx3-ubyte", make_idx({4, 4}, iota_bytes(16)));
  write_raw(dir / "train-labels-idx1-ubyte", make_idx({4}, iota_bytes(4)));
  expect_dataset_error([&] { load_idx_split(dir.path(), "train"); },
                       dir / "train-images-idx3-ubyte", {"expected 3 dimensions", "4 x 4"});
  write_raw(dir / "train-images-idx3-ubyte", make_idx({4, 1, 1}, iota_bytes(4)));
  write_raw(dir / "train-labels-idx1-ubyte", make_idx({4, 1}, iota_bytes(4)));
  expect_dataset_error([&] { load_idx_split(dir.path(), "train"); },
                       dir / "train-labels-idx1-ubyte", {"expected 1 dimension", "4 x 1"});
}

TEST(IdxSplit, CorruptFileInsideSplitIsNamed) {
  TempDir dir;
  write_split(dir, "train", 3, 2, 2, 3, false, false);
  Bytes bytes = read_file(dir / "train-images-idx3-ubyte");
  bytes.pop_back();
  write_raw(dir / "train-images-idx3-ubyte", bytes);
  expect_dataset_error([&] { load_idx_split(dir.path(), "train"); },
                       dir / "train-images-idx3-ubyte", {"expected 12 bytes of data, found 11"});
}

TEST(IdxSplit, UnknownSplitAndMissingDirectory) {
  TempDir dir;
  expect_dataset_error([&] { load_idx_split(dir.path(), "validation"); }, dir.path(),
                       {"unknown split \"validation\""});
  expect_dataset_error([&] { load_idx_split(dir / "absent", "train"); }, dir / "absent",
                       {"directory not found"});
}

TEST(IdxSplit, FashionMnistTestSplit) {
  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " is not installed (dataset-fashion-mnist)";
  const LabeledImages s = load_idx_split(dir, "test");
  EXPECT_EQ(s.count, 10000);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 28);
  EXPECT_EQ(s.width, 28);
  EXPECT_EQ(s.pixels.size(), 10000u * 28u * 28u);
  ASSERT_EQ(s.labels.size(), 10000u);
  for (const std::int32_t label : s.labels) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 10);
  }
  EXPECT_EQ(s.num_classes, 10);
  EXPECT_EQ(class_counts(s), std::vector<std::int64_t>(10, 1000));
}

}  // namespace
}  // namespace pb::data
