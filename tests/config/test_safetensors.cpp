// pb::checkpoint safetensors: round trips, the exact byte layout, every corruption load() must
// reject with its message, and load_into's matching of names, shapes and dtypes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/random.h"
#include "runtime/nn/layers.h"

namespace pb::checkpoint {
namespace {

namespace fs = std::filesystem;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("pb_safetensors_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name) const { return dir_ / name; }

  static std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // Writes a file with the given header text (the length prefix is its size unless given) and
  // data bytes.
  fs::path write_raw(const std::string& name, const std::string& header, const std::string& data,
                     std::optional<uint64_t> length = std::nullopt) {
    const fs::path path = file(name);
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = length.value_or(header.size());
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return path;
  }

  // The CheckpointError message of loading a file made of header + data.
  std::string load_error(const std::string& header, const std::string& data,
                         std::optional<uint64_t> length = std::nullopt) {
    const fs::path path = write_raw("bad.safetensors", header, data, length);
    try {
      load(path);
    } catch (const CheckpointError& e) {
      const std::string msg = e.what();
      const std::string prefix = path.string() + ": ";
      if (msg.rfind(prefix, 0) != 0) return "<message does not name the file> " + msg;
      return msg.substr(prefix.size());
    }
    return "<no error>";
  }

  fs::path dir_;
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "<no error>";
}

// ---- round trips --------------------------------------------------------------------------------

TEST_F(Safetensors, RoundTripsEveryDtypeScalarsAndEmptyTensors) {
  const Tensor f32 = from_vector<float>({1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f}, {2, 3});
  const Tensor f64 = from_vector<double>({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}, {2, 2, 2},
                                         TensorOptions{}.with_dtype(DType::F64));
  const Tensor i32 = from_vector<int32_t>({7, -1, 2147483647, -2147483647 - 1}, {4},
                                          TensorOptions{}.with_dtype(DType::I32));
  const Tensor scalar = from_vector<float>({42.0f}, Shape{});
  const Tensor empty_rows = zeros({0, 4});
  const Tensor empty_i32 = zeros({3, 0}, TensorOptions{}.with_dtype(DType::I32));
  const std::vector<NamedTensor> tensors = {{"layer1.0.conv1.weight", f32},
                                            {"f64", f64},
                                            {"labels", i32},
                                            {"scalar", scalar},
                                            {"empty_rows", empty_rows},
                                            {"empty_i32", empty_i32},
                                            {"after_empty", f32}};
  const std::map<std::string, std::string> metadata = {{"step", "100"}, {"format", "pt"}};
  save(file("a.safetensors"), tensors, metadata);

  const Loaded loaded = load(file("a.safetensors"));
  EXPECT_EQ(loaded.path, file("a.safetensors"));
  EXPECT_EQ(loaded.metadata, metadata);
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = loaded.tensors[i];
    EXPECT_EQ(name, tensors[i].first);
    EXPECT_EQ(t.shape(), tensors[i].second.shape()) << name;
    EXPECT_EQ(t.dtype(), tensors[i].second.dtype()) << name;
    EXPECT_TRUE(t.device().is_cpu());
    ASSERT_EQ(t.nbytes(), tensors[i].second.nbytes());
    if (t.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(t.raw_data(), tensors[i].second.raw_data(), t.nbytes()), 0) << name;
    }
  }
  EXPECT_EQ(loaded.tensors[3].second.ndim(), 0);
  EXPECT_EQ(loaded.tensors[3].second.item<float>(), 42.0f);
  EXPECT_EQ(loaded.tensors[2].second.to_vector<int32_t>(), i32.to_vector<int32_t>());
  ASSERT_NE(loaded.find("f64"), nullptr);
  EXPECT_EQ(loaded.find("f64")->to_vector<double>(), f64.to_vector<double>());
  EXPECT_EQ(loaded.find("nope"), nullptr);
}

TEST_F(Safetensors, RoundTripsNothingAtAll) {
  save(file("empty.safetensors"), {});
  EXPECT_EQ(read_bytes(file("empty.safetensors")), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  const Loaded loaded = load(file("empty.safetensors"));
  EXPECT_TRUE(loaded.tensors.empty());
  EXPECT_TRUE(loaded.metadata.empty());
}

TEST_F(Safetensors, SaveIsAtomicAndOverwrites) {
  save(file("c.safetensors"), {{"x", ones({3})}});
  save(file("c.safetensors"), {{"y", zeros({2})}});
  EXPECT_FALSE(fs::exists(file("c.safetensors.tmp")));
  const Loaded loaded = load(file("c.safetensors"));
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].first, "y");
  // Saving into a missing directory fails cleanly, leaving nothing behind.
  EXPECT_EQ(
      error_of([&] {
        save(dir_ / "no" / "d.safetensors", {{"x", ones({1})}});
      }),
      (dir_ / "no" / "d.safetensors.tmp").string() + ": cannot create: No such file or directory");
}

TEST_F(Safetensors, SaveRejectsBadNames) {
  const fs::path p = file("n.safetensors");
  EXPECT_EQ(error_of([&] {
              save(p, {{"a", ones({1})}, {"", ones({1})}});
            }),
            p.string() + ": tensor #1 has an empty name");
  EXPECT_EQ(error_of([&] {
              save(p, {{"a", ones({1})}, {"a", ones({2})}});
            }),
            p.string() + ": duplicate tensor name 'a'");
  EXPECT_EQ(error_of([&] {
              save(p, {{"__metadata__", ones({1})}});
            }),
            p.string() + ": '__metadata__' is reserved, not a tensor name");
  EXPECT_EQ(error_of([&] {
              save(p, {{"u", Tensor()}});
            }),
            p.string() + ": tensor 'u' is undefined");
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(file("n.safetensors.tmp")));
}

TEST_F(Safetensors, ModelStateRoundTrips) {
  Generator g1(1), g2(2);
  nn::Linear a(4, 3, g1), b(4, 3, g2);
  save(file("m.safetensors"), a.state());
  load_into(load(file("m.safetensors")), b.state(), "model");
  EXPECT_EQ(b.weight().to_vector<float>(), a.weight().to_vector<float>());
  EXPECT_EQ(b.bias().to_vector<float>(), a.bias().to_vector<float>());
}

// ---- byte layout --------------------------------------------------------------------------------

TEST_F(Safetensors, ByteLayoutMatchesTheFormat) {
  const Tensor a = from_vector<float>({1.0f, 2.0f}, {2});
  const Tensor b = from_vector<int32_t>({7}, Shape{}, TensorOptions{}.with_dtype(DType::I32));
  save(file("tiny.safetensors"), {{"a", a}, {"b", b}}, {{"k", "v"}});
  const std::string bytes = read_bytes(file("tiny.safetensors"));

  // 132 bytes of JSON padded with 4 spaces to 136, a multiple of 8.
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I32","shape":[],"data_offsets":[8,12]}}    )";
  ASSERT_EQ(header.size(), 136u);
  ASSERT_EQ(bytes.size(), 8u + 136u + 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x88\0\0\0\0\0\0\0", 8));  // 136, little-endian
  EXPECT_EQ(bytes.substr(8, 136), header);
  // Data: 1.0f, 2.0f, 7 as little-endian bytes.
  EXPECT_EQ(bytes.substr(144), std::string("\x00\x00\x80\x3f\x00\x00\x00\x40\x07\x00\x00\x00", 12));
}

// ---- corrupt files ------------------------------------------------------------------------------

const std::string kGood = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::string kEightBytes(8, '\0');

TEST_F(Safetensors, ValidHandWrittenFileLoads) {
  // No padding and keys in another order: still valid.
  const Loaded l = load(write_raw("ok.safetensors",
                                  R"({"b":{"shape":[1],"dtype":"I32","data_offsets":[8,12]},)"
                                  R"("a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})",
                                  std::string(12, '\0')));
  ASSERT_EQ(l.tensors.size(), 2u);
  EXPECT_EQ(l.tensors[0].first, "a");  // in data order
  EXPECT_EQ(l.tensors[1].first, "b");
}

TEST_F(Safetensors, MissingOrShortFile) {
  EXPECT_EQ(error_of([&] { load(file("missing.safetensors")); }),
            file("missing.safetensors").string() + ": no such file");
  std::ofstream(file("short.safetensors"), std::ios::binary) << "abcde";
  EXPECT_EQ(error_of([&] { load(file("short.safetensors")); }),
            file("short.safetensors").string() +
                ": file is 5 bytes, too short for the 8-byte header length");
  EXPECT_EQ(error_of([&] { load(dir_); }),
            dir_.string() + ": is a directory, not a safetensors file");
}

TEST_F(Safetensors, HeaderLengthBeyondTheFile) {
  EXPECT_EQ(load_error(kGood, kEightBytes, 1000),
            "header length 1000 runs past the end of the 70-byte file");
  EXPECT_EQ(load_error(kGood, kEightBytes, UINT64_MAX),
            "header length 18446744073709551615 runs past the end of the 70-byte file");
}

TEST_F(Safetensors, HeaderNotJson) {
  const std::string e = load_error("{\"a\": nope}", "");
  EXPECT_EQ(e.rfind("header is not valid JSON: [json.exception.parse_error.101]", 0), 0u) << e;
  EXPECT_EQ(load_error("[1, 2]  ", ""), "header is not a JSON object");
  EXPECT_EQ(load_error("", "").rfind("header is not valid JSON", 0), 0u);
}

TEST_F(Safetensors, EntryMissingAField) {
  EXPECT_EQ(load_error(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': header entry has no \"dtype\"");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': header entry has no \"shape\"");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2]}})", kEightBytes),
            "tensor 'a': header entry has no \"data_offsets\"");
  EXPECT_EQ(load_error(R"({"a":[1]})", ""), "tensor 'a': header entry is not a JSON object");
}

TEST_F(Safetensors, BadFieldValues) {
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': unknown dtype \"F128\"");
  EXPECT_EQ(load_error(R"({"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': \"dtype\" is not a string");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a' has dtype I64, which playbook cannot hold (it loads F32, F64, I32)");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': \"shape\" must be a list of non-negative integers, got [-2]");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': \"shape\" is not a list");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,2],"data_offsets":[0,8]}})",
                       kEightBytes),
            "tensor 'a' has 6 dimensions, playbook supports at most 5");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],)"
                       R"("data_offsets":[0,8]}})",
                       kEightBytes),
            "tensor 'a': shape [4611686018427387904,4] is too large");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kEightBytes),
            "tensor 'a': \"data_offsets\" must be two non-negative integers, got [0]");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", kEightBytes),
            "tensor 'a': \"data_offsets\" must be two non-negative integers, got [0,8.0]");
  EXPECT_EQ(load_error(R"({"__metadata__":{"step":100}})", ""),
            "\"__metadata__\" must map strings to strings; \"step\" is 100");
  EXPECT_EQ(load_error(R"({"__metadata__":[]})", ""), "\"__metadata__\" is not a JSON object");
  EXPECT_EQ(load_error(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
            "header has a tensor with an empty name");
}

TEST_F(Safetensors, OffsetsOutOfRangeOrWrongSize) {
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", kEightBytes),
            "tensor 'a': data_offsets [8, 0] end before they begin");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", kEightBytes),
            "tensor 'a': data_offsets [4, 12] run past the 8-byte data section");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': data_offsets [0, 8] hold 8 bytes, but shape (3) of F32 needs 12");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
            "tensor 'a': data_offsets [0, 8] hold 8 bytes, but shape (2) of F64 needs 16");
}

TEST_F(Safetensors, OverlapsGapsAndTrailingBytes) {
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\0')),
            "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                       kEightBytes),
            "tensors 'a' [0, 8] and 'b' [0, 8] overlap");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", kEightBytes),
            "bytes [0, 4) of the data section belong to no tensor (gap before 'a')");
  EXPECT_EQ(load_error(kGood, std::string(11, '\0')),
            "3 trailing bytes: the tensors end at byte 8 of the 11-byte data section");
  EXPECT_EQ(load_error("{}", "x"),
            "1 trailing bytes: the tensors end at byte 0 of the 1-byte data section");
}

TEST_F(Safetensors, DuplicateNames) {
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       kEightBytes),
            "duplicate tensor name 'a'");
  EXPECT_EQ(load_error(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                       kEightBytes),
            "header repeats the key \"dtype\" inside an entry");
}

TEST_F(Safetensors, TruncatedDataIsReported) {
  // Every check passes on the header, but the length prefix claims less than the header: the
  // header then is cut, so it is not JSON.
  const std::string e = load_error(kGood, kEightBytes, 10);
  EXPECT_EQ(e.rfind("header is not valid JSON", 0), 0u) << e;
}

// ---- load_into ----------------------------------------------------------------------------------

TEST_F(Safetensors, LoadIntoCopiesMatchingTensors) {
  const Tensor w = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor n = from_vector<int32_t>({9}, Shape{}, TensorOptions{}.with_dtype(DType::I32));
  save(file("s.safetensors"), {{"fc.weight", w}, {"steps", n}});
  const Loaded loaded = load(file("s.safetensors"));
  // Targets in another order than the file.
  const Tensor tw = zeros({2, 3});
  const Tensor tn = zeros(Shape{}, TensorOptions{}.with_dtype(DType::I32));
  load_into(loaded, {{"steps", tn}, {"fc.weight", tw}}, "model");
  EXPECT_EQ(tw.to_vector<float>(), w.to_vector<float>());
  EXPECT_EQ(tn.item<int32_t>(), 9);
}

TEST_F(Safetensors, LoadIntoReportsMismatchesAndCopiesNothing) {
  save(file("ckpt.safetensors"), {{"layer1.0.conv1.weight", ones({16, 16, 3, 3})},
                                  {"fc.weight", ones({10, 4})},
                                  {"fc2.weight", ones({2})}});
  const Loaded loaded = load(file("ckpt.safetensors"));
  const std::string f = file("ckpt.safetensors").string();

  const Tensor conv = zeros({32, 16, 3, 3});
  const Tensor fc = zeros({10, 4});
  EXPECT_EQ(
      error_of([&] {
        load_into(loaded,
                  {{"layer1.0.conv1.weight", conv}, {"fc.weight", fc}, {"fc2.weight", ones({2})}},
                  "model");
      }),
      f + ": layer1.0.conv1.weight has shape (16, 16, 3, 3), the model expects (32, 16, 3, 3)");
  EXPECT_EQ(fc.to_vector<float>(), std::vector<float>(40, 0.0f));  // nothing copied

  const Tensor fc_f64 = zeros({10, 4}, TensorOptions{}.with_dtype(DType::F64));
  EXPECT_EQ(error_of([&] {
              load_into(loaded,
                        {{"layer1.0.conv1.weight", zeros({16, 16, 3, 3})},
                         {"fc.weight", fc_f64},
                         {"fc2.weight", zeros({2})}},
                        "model");
            }),
            f + ": fc.weight has dtype float32, the model expects float64");

  EXPECT_EQ(error_of([&] {
              load_into(loaded,
                        {{"layer1.0.conv1.weight", zeros({16, 16, 3, 3})},
                         {"fc.weight", fc},
                         {"fc.bias", zeros({10})},
                         {"fc2.weight", zeros({2})}},
                        "model");
            }),
            f + ": missing tensor fc.bias (the model expects it)");

  EXPECT_EQ(error_of([&] {
              load_into(loaded,
                        {{"layer1.0.conv1.weight", zeros({16, 16, 3, 3})}, {"fc.weight", fc}},
                        "model");
            }),
            f + ": unexpected tensor fc2.weight (the model has no such tensor)");

  EXPECT_EQ(error_of([&] {
              load_into(loaded, {{"layer1.0.conv1.weight", conv}, {"fc.bias", zeros({10})}},
                        "optimizer state");
            }),
            f + ": layer1.0.conv1.weight has shape (16, 16, 3, 3), the optimizer state expects "
                "(32, 16, 3, 3) (and 3 more problems)");

  EXPECT_EQ(error_of([&] {
              load_into(loaded, {{"fc.weight", fc}, {"fc.weight", fc}}, "model");
            }),
            f + ": the model lists tensor 'fc.weight' twice");
  EXPECT_EQ(fc.to_vector<float>(), std::vector<float>(40, 0.0f));
}

TEST_F(Safetensors, ErrorsArePbErrors) {
  EXPECT_THROW(load(file("nothing")), pb::Error);
}

}  // namespace
}  // namespace pb::checkpoint
