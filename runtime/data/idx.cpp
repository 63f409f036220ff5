// IDX reader. The file is read through IdxInput, which hands out the (decompressed) bytes of a
// raw or gzip'd file in order and reports every I/O or zlib failure as a DatasetError; the
// parser on top of it checks the header, the declared size and the exact data length.

#include "runtime/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <system_error>

namespace pb::data {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kKind = "idx file";

[[noreturn]] void fail(const fs::path& path, const std::string& problem) {
  throw DatasetError(kKind, path, problem);
}

std::string hex_bytes(const std::uint8_t* bytes, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0) out += ' ';
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xf];
  }
  return out;
}

std::string type_name(std::uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "";
  }
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// The bytes of a file in order, inflated when the file starts with the gzip magic 0x1f 0x8b.
// Concatenated gzip members are read as one stream, as gzip(1) does.
class IdxInput {
 public:
  explicit IdxInput(const fs::path& path) : path_(path), buffer_(kBufferSize) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (status.type() == fs::file_type::not_found) fail(path, "file not found");
    if (status.type() == fs::file_type::directory) fail(path, "is a directory, not a file");
    errno = 0;
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) {
      fail(path, std::string("cannot open for reading: ") +
                     (errno != 0 ? std::strerror(errno) : "unknown error"));
    }
    refill();
    gzip_ = available_ >= 2 && next_[0] == 0x1f && next_[1] == 0x8b;
    if (gzip_) {
      stream_.zalloc = Z_NULL;
      stream_.zfree = Z_NULL;
      stream_.opaque = Z_NULL;
      stream_.next_in = Z_NULL;
      stream_.avail_in = 0;
      if (inflateInit2(&stream_, 15 + 16) != Z_OK) fail(path, "cannot initialise zlib");
      inflating_ = true;
    }
  }
  ~IdxInput() {
    if (inflating_) inflateEnd(&stream_);
  }
  IdxInput(const IdxInput&) = delete;
  IdxInput& operator=(const IdxInput&) = delete;

  bool gzip() const { return gzip_; }

  // Reads up to n bytes into dst; returns fewer only at the end of the data.
  std::size_t read(std::uint8_t* dst, std::size_t n) {
    return gzip_ ? read_gzip(dst, n) : read_raw(dst, n);
  }

  // Reads and counts everything that is left.
  std::uint64_t count_remaining() {
    std::array<std::uint8_t, 1 << 14> scratch{};
    std::uint64_t total = 0;
    while (const std::size_t got = read(scratch.data(), scratch.size())) total += got;
    return total;
  }

 private:
  static constexpr std::size_t kBufferSize = std::size_t{1} << 16;

  // Reads the next chunk of the file into buffer_; available_ == 0 afterwards means end of file.
  void refill() {
    const std::size_t got = std::fread(buffer_.data(), 1, buffer_.size(), file_.get());
    if (got == 0 && std::ferror(file_.get())) {
      fail(path_, std::string("read error: ") + std::strerror(errno));
    }
    next_ = buffer_.data();
    available_ = got;
  }

  std::size_t read_raw(std::uint8_t* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      if (available_ == 0) {
        refill();
        if (available_ == 0) break;
      }
      const std::size_t take = std::min(available_, n - got);
      std::memcpy(dst + got, next_, take);
      next_ += take;
      available_ -= take;
      got += take;
    }
    return got;
  }

  std::size_t read_gzip(std::uint8_t* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      if (available_ == 0) refill();
      if (member_ended_) {
        if (available_ == 0) break;  // clean end after the last member
        if (next_[0] != 0x1f) {
          fail(path_, "trailing garbage: " + std::to_string(rest_of_file()) +
                          " bytes that are not gzip data after the end of the gzip stream");
        }
        inflateReset(&stream_);
        member_ended_ = false;
      }
      if (available_ == 0) {
        fail(path_,
             "corrupt gzip stream: the compressed data ends before the end of the stream "
             "(truncated .gz file?) after " +
                 std::to_string(inflated_ + got) + " decompressed bytes");
      }
      constexpr std::size_t kMaxChunk = std::numeric_limits<uInt>::max();
      const std::size_t want = std::min(n - got, kMaxChunk);
      stream_.next_in = next_;
      stream_.avail_in = static_cast<uInt>(available_);
      stream_.next_out = dst + got;
      stream_.avail_out = static_cast<uInt>(want);
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      got += want - stream_.avail_out;
      next_ = stream_.next_in;
      available_ = stream_.avail_in;
      if (rc == Z_STREAM_END) {
        member_ended_ = true;
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        const char* why = stream_.msg != nullptr ? stream_.msg : zError(rc);
        fail(path_, std::string("corrupt gzip stream: ") + why + " (after " +
                        std::to_string(inflated_ + got) + " decompressed bytes)");
      }
    }
    inflated_ += got;
    return got;
  }

  // Bytes of the file not yet read into buffer_ (for messages only).
  std::uint64_t rest_of_file() {
    std::uint64_t total = 0;
    do {
      total += available_;
      refill();
    } while (available_ > 0);
    return total;
  }

  fs::path path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::vector<std::uint8_t> buffer_;
  std::uint8_t* next_ = nullptr;
  std::size_t available_ = 0;
  bool gzip_ = false;
  bool inflating_ = false;
  bool member_ended_ = false;
  std::uint64_t inflated_ = 0;
  z_stream stream_{};
};

std::string format_dims(const std::vector<std::int64_t>& dims) {
  std::string out;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) out += " x ";
    out += std::to_string(dims[i]);
  }
  return out.empty() ? "(none)" : out;
}

}  // namespace

IdxArray read_idx(const std::filesystem::path& path) {
  IdxInput in(path);
  const std::string stored = in.gzip() ? " (after decompression)" : "";

  std::array<std::uint8_t, 4> magic{};
  const std::size_t magic_bytes = in.read(magic.data(), magic.size());
  if (magic_bytes == 0) fail(path, "file is empty" + stored + "; expected an IDX header");
  if (magic_bytes < magic.size()) {
    fail(path, "truncated header: expected a 4-byte magic number, found " +
                   std::to_string(magic_bytes) + " bytes" + stored);
  }
  if (magic[0] != 0 || magic[1] != 0) {
    fail(path, "wrong magic: expected 00 00 <type> <ndims>, found " +
                   hex_bytes(magic.data(), magic.size()) + stored + " (not an IDX file?)");
  }
  const std::uint8_t type = magic[2];
  if (type != 0x08) {
    const std::string name = type_name(type);
    fail(path, "unsupported element type 0x" + hex_bytes(&type, 1) +
                   (name.empty() ? " (not an IDX type)" : " (" + name + ")") +
                   "; only 0x08 (unsigned byte) is supported");
  }
  const std::size_t ndims = magic[3];
  if (ndims == 0) fail(path, "header declares 0 dimensions");

  std::vector<std::uint8_t> header(4 * ndims);
  const std::size_t header_bytes = in.read(header.data(), header.size());
  if (header_bytes < header.size()) {
    fail(path, "truncated header: expected " + std::to_string(header.size()) + " bytes of " +
                   std::to_string(ndims) + " dimension sizes, found " +
                   std::to_string(header_bytes));
  }

  IdxArray array;
  array.dims.resize(ndims);
  bool any_zero = false;
  for (std::size_t d = 0; d < ndims; ++d) {
    const std::uint8_t* b = header.data() + 4 * d;
    const std::uint32_t size = (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
                               (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
    array.dims[d] = size;
    any_zero = any_zero || size == 0;
  }
  std::int64_t elements = 1;
  if (any_zero) {
    elements = 0;
  } else {
    for (const std::int64_t size : array.dims) {
      if (elements > kIdxMaxElements / size) {
        fail(path, "absurd dimensions " + format_dims(array.dims) +
                       ": more than 2^31 elements (corrupt header?)");
      }
      elements *= size;
    }
  }
  if (elements > kIdxMaxElements) {
    fail(path, "absurd dimensions " + format_dims(array.dims) +
                   ": more than 2^31 elements (corrupt header?)");
  }

  // Read in chunks so that a header that overstates the size of a short file costs no more
  // memory than the file holds.
  constexpr std::size_t kChunk = std::size_t{1} << 24;
  const auto expected = static_cast<std::size_t>(elements);
  std::size_t data_bytes = 0;
  while (data_bytes < expected) {
    const std::size_t want = std::min(kChunk, expected - data_bytes);
    array.data.resize(data_bytes + want);
    const std::size_t got = in.read(array.data.data() + data_bytes, want);
    data_bytes += got;
    if (got < want) break;
  }
  array.data.resize(data_bytes);
  if (data_bytes < expected) {
    fail(path, "truncated data: expected " + std::to_string(elements) + " bytes of data, found " +
                   std::to_string(data_bytes) + stored + " for dimensions " +
                   format_dims(array.dims));
  }
  const std::uint64_t extra = in.count_remaining();
  if (extra > 0) {
    fail(path, "trailing garbage: " + std::to_string(extra) + " bytes after the " +
                   std::to_string(elements) + " bytes of data" + stored);
  }
  return array;
}

namespace {

// <dir>/<name>.gz when it exists, else <dir>/<name>; throws when neither exists.
std::filesystem::path find_idx_file(const std::filesystem::path& dir, const std::string& name) {
  const std::filesystem::path gz = dir / (name + ".gz");
  const std::filesystem::path raw = dir / name;
  std::error_code ec;
  if (std::filesystem::exists(gz, ec)) return gz;
  if (std::filesystem::exists(raw, ec)) return raw;
  fail(gz, "file not found (nor \"" + raw.string() + "\")");
}

}  // namespace

LabeledImages load_idx_split(const std::filesystem::path& dir, std::string_view split) {
  constexpr std::string_view kDatasetKind = "idx dataset";
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test") {
    prefix = "t10k";
  } else {
    throw DatasetError(kDatasetKind, dir,
                       "unknown split \"" + std::string(split) + "\" (expected train or test)");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw DatasetError(kDatasetKind, dir, "directory not found");
  }

  LabeledImages out;
  out.images_file = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  out.labels_file = find_idx_file(dir, prefix + "-labels-idx1-ubyte");

  IdxArray images = read_idx(out.images_file);
  if (images.dims.size() != 3) {
    fail(out.images_file, "expected 3 dimensions (count, height, width) for images, found " +
                              std::to_string(images.dims.size()) + ": " + format_dims(images.dims));
  }
  if (images.dims[1] == 0 || images.dims[2] == 0) {
    fail(out.images_file, "images have an empty size " + format_dims(images.dims));
  }
  const IdxArray labels = read_idx(out.labels_file);
  if (labels.dims.size() != 1) {
    fail(out.labels_file, "expected 1 dimension (count) for labels, found " +
                              std::to_string(labels.dims.size()) + ": " + format_dims(labels.dims));
  }
  if (labels.dims[0] != images.dims[0]) {
    fail(out.labels_file,
         "has " + std::to_string(labels.dims[0]) + " labels but \"" + out.images_file.string() +
             "\" has " + std::to_string(images.dims[0]) + " images (image/label count mismatch)");
  }

  out.count = images.dims[0];
  out.channels = 1;
  out.height = images.dims[1];
  out.width = images.dims[2];
  out.pixels = std::move(images.data);
  out.labels.assign(labels.data.begin(), labels.data.end());
  for (const std::int32_t label : out.labels)
    out.num_classes = std::max(out.num_classes, label + 1);
  return out;
}

std::vector<std::int64_t> class_counts(const LabeledImages& images) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(images.num_classes), 0);
  for (const std::int32_t label : images.labels) {
    if (label >= 0 && label < images.num_classes) ++counts[static_cast<std::size_t>(label)];
  }
  return counts;
}

}  // namespace pb::data
