#include "runtime/checkpoint/safetensors.h"

#include "runtime/checkpoint/atomic_file.h"

#include <algorithm>
#include <bit>
#include <fstream>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace pb::checkpoint {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swapping");

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

constexpr std::string_view kMetadataKey = "__metadata__";

template <typename... Args>
[[noreturn]] void fail_file(const fs::path& path, fmt::format_string<Args...> format,
                            Args&&... args) {
  throw CheckpointError(path.string() + ": " + fmt::format(format, std::forward<Args>(args)...));
}

// The dtype codes of the safetensors format; those playbook tensors cannot hold map to nothing.
struct DTypeCode {
  std::string_view code;
  std::optional<DType> dtype;
};
constexpr DTypeCode kDTypeCodes[] = {
    {"F32", DType::F32},    {"F64", DType::F64},       {"I32", DType::I32},
    {"F16", std::nullopt},  {"BF16", std::nullopt},    {"I64", std::nullopt},
    {"I16", std::nullopt},  {"I8", std::nullopt},      {"U8", std::nullopt},
    {"U16", std::nullopt},  {"U32", std::nullopt},     {"U64", std::nullopt},
    {"BOOL", std::nullopt}, {"F8_E4M3", std::nullopt}, {"F8_E5M2", std::nullopt},
};

}  // namespace

std::string_view safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::I32:
      return "I32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
  }
  return "?";
}

// ---- save ---------------------------------------------------------------------------------------

namespace {

void put_u64_le(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_u64_le(const unsigned char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

}  // namespace

void save(const fs::path& path, const std::vector<NamedTensor>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (name.empty()) fail_file(path, "tensor #{} has an empty name", i);
    if (name == kMetadataKey) fail_file(path, "'{}' is reserved, not a tensor name", name);
    if (!seen.insert(name).second) fail_file(path, "duplicate tensor name '{}'", name);
    if (!t.defined()) fail_file(path, "tensor '{}' is undefined", name);
  }

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    Json entry = Json::object();
    entry["dtype"] = std::string(safetensors_dtype(t.dtype()));
    Json shape = Json::array();
    for (const int64_t d : t.shape().dims()) shape.push_back(d);
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = Json::array({offset, offset + t.nbytes()});
    header[name] = std::move(entry);
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {
    fail_file(path, "cannot write the header (names and metadata must be UTF-8): {}", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  AtomicFile out(path);
  char length[8];
  put_u64_le(length, text.size());
  out.write(length, sizeof length);
  out.write(text.data(), text.size());
  for (const auto& [name, t] : tensors) {
    const Tensor host = t.to(Device::cpu());
    out.write(host.raw_data(), host.nbytes());
  }
  out.commit();
}

// ---- load ---------------------------------------------------------------------------------------

const Tensor* Loaded::find(std::string_view name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

namespace {

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  std::string code;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// A header entry's "dtype", "shape" and "data_offsets", checked one by one.
Entry parse_entry(const fs::path& path, const std::string& name, const Json& value,
                  uint64_t data_size) {
  Entry e;
  e.name = name;
  if (!value.is_object()) fail_file(path, "tensor '{}': header entry is not a JSON object", name);
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field))
      fail_file(path, "tensor '{}': header entry has no \"{}\"", name, field);
  }

  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) fail_file(path, "tensor '{}': \"dtype\" is not a string", name);
  e.code = dtype.get<std::string>();
  const auto* code = std::find_if(std::begin(kDTypeCodes), std::end(kDTypeCodes),
                                  [&](const DTypeCode& c) { return c.code == e.code; });
  if (code == std::end(kDTypeCodes)) {
    fail_file(path, "tensor '{}': unknown dtype \"{}\"", name, e.code);
  }
  if (!code->dtype) {
    fail_file(path, "tensor '{}' has dtype {}, which playbook cannot hold (it loads F32, F64, I32)",
              name, e.code);
  }
  e.dtype = *code->dtype;

  const Json& shape = value["shape"];
  if (!shape.is_array()) fail_file(path, "tensor '{}': \"shape\" is not a list", name);
  if (shape.size() > static_cast<std::size_t>(Shape::kMaxDims)) {
    fail_file(path, "tensor '{}' has {} dimensions, playbook supports at most {}", name,
              shape.size(), Shape::kMaxDims);
  }
  std::vector<int64_t> dims;
  // Bytes the shape needs, with overflow checked: numel * element size < 2^63.
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t nbytes = dtype_size(e.dtype);
  for (const Json& d : shape) {
    if (!d.is_number_unsigned()) {
      fail_file(path, "tensor '{}': \"shape\" must be a list of non-negative integers, got {}",
                name, shape.dump());
    }
    const uint64_t n = d.get<uint64_t>();
    if (n > limit || (n != 0 && nbytes > limit / n)) {
      fail_file(path, "tensor '{}': shape {} is too large", name, shape.dump());
    }
    nbytes *= n;
    dims.push_back(static_cast<int64_t>(n));
  }
  e.shape = Shape(std::span<const int64_t>(dims));

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail_file(path, "tensor '{}': \"data_offsets\" must be two non-negative integers, got {}", name,
              offsets.dump());
  }
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.end < e.begin) {
    fail_file(path, "tensor '{}': data_offsets [{}, {}] end before they begin", name, e.begin,
              e.end);
  }
  if (e.end > data_size) {
    fail_file(path, "tensor '{}': data_offsets [{}, {}] run past the {}-byte data section", name,
              e.begin, e.end, data_size);
  }
  if (e.end - e.begin != nbytes) {
    fail_file(path, "tensor '{}': data_offsets [{}, {}] hold {} bytes, but shape {} of {} needs {}",
              name, e.begin, e.end, e.end - e.begin, e.shape.str(), e.code, nbytes);
  }
  return e;
}

// Parses the header, recording the first key that repeats within one JSON object (nlohmann
// would otherwise keep the last value silently).
Json parse_header(const fs::path& path, const std::string& text) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::optional<std::pair<int, std::string>> duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty() && !duplicate) {
      const std::string key = parsed.get<std::string>();
      if (!keys.back().insert(key).second) duplicate = std::pair(depth, key);
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, callback);
  } catch (const Json::exception& e) {
    fail_file(path, "header is not valid JSON: {}", e.what());
  }
  if (duplicate) {
    if (duplicate->first == 1) fail_file(path, "duplicate tensor name '{}'", duplicate->second);
    fail_file(path, "header repeats the key \"{}\" inside an entry", duplicate->second);
  }
  if (!header.is_object()) fail_file(path, "header is not a JSON object");
  return header;
}

}  // namespace

Loaded load(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_file(path, "no such file");
  if (fs::is_directory(path, ec)) fail_file(path, "is a directory, not a safetensors file");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail_file(path, "cannot read the file size: {}", ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open for reading");
  if (size < 8) {
    fail_file(path, "file is {} bytes, too short for the 8-byte header length", size);
  }
  unsigned char length_bytes[8];
  if (!in.read(reinterpret_cast<char*>(length_bytes), 8)) fail_file(path, "read error");
  const uint64_t header_size = get_u64_le(length_bytes);
  if (header_size > size - 8) {
    fail_file(path, "header length {} runs past the end of the {}-byte file", header_size, size);
  }
  std::string text(header_size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(header_size))) {
    fail_file(path, "read error in the header");
  }
  const Json header = parse_header(path, text);
  const uint64_t data_size = size - 8 - header_size;

  Loaded loaded;
  loaded.path = path;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) fail_file(path, "\"{}\" is not a JSON object", kMetadataKey);
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) {
          fail_file(path, "\"{}\" must map strings to strings; \"{}\" is {}", kMetadataKey, k,
                    v.dump());
        }
        loaded.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (name.empty()) fail_file(path, "header has a tensor with an empty name");
    entries.push_back(parse_entry(path, name, value, data_size));
  }

  // The tensors must tile the data section exactly: no overlaps, no gaps, nothing after them.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  uint64_t position = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < position) {
      const Entry& prev = entries[i - 1];
      fail_file(path, "tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", prev.name, prev.begin,
                prev.end, e.name, e.begin, e.end);
    }
    if (e.begin > position) {
      fail_file(path, "bytes [{}, {}) of the data section belong to no tensor (gap before '{}')",
                position, e.begin, e.name);
    }
    position = e.end;
  }
  if (position != data_size) {
    fail_file(path, "{} trailing bytes: the tensors end at byte {} of the {}-byte data section",
              data_size - position, position, data_size);
  }

  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, TensorOptions{}.with_dtype(e.dtype));
    if (t.nbytes() > 0 &&
        !in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()))) {
      fail_file(path, "read error in the data of tensor '{}'", e.name);
    }
    loaded.tensors.emplace_back(e.name, std::move(t));
  }
  return loaded;
}

// ---- load_into ----------------------------------------------------------------------------------

void load_into(const Loaded& loaded, const std::vector<NamedTensor>& targets,
               std::string_view what) {
  const std::string file = loaded.path.empty() ? "checkpoint" : loaded.path.string();
  std::vector<std::string> problems;
  std::set<std::string_view> wanted;
  std::vector<std::pair<const Tensor*, const Tensor*>> copies;  // (target, source)
  for (const auto& [name, target] : targets) {
    if (!wanted.insert(name).second) {
      throw CheckpointError(fmt::format("{}: the {} lists tensor '{}' twice", file, what, name));
    }
    const Tensor* source = loaded.find(name);
    if (!source) {
      problems.push_back(fmt::format("missing tensor {} (the {} expects it)", name, what));
    } else if (source->shape() != target.shape()) {
      problems.push_back(fmt::format("{} has shape {}, the {} expects {}", name,
                                     source->shape().str(), what, target.shape().str()));
    } else if (source->dtype() != target.dtype()) {
      problems.push_back(fmt::format("{} has dtype {}, the {} expects {}", name,
                                     dtype_name(source->dtype()), what,
                                     dtype_name(target.dtype())));
    } else {
      copies.emplace_back(&target, source);
    }
  }
  for (const auto& [name, t] : loaded.tensors) {
    if (!wanted.contains(name)) {
      problems.push_back(
          fmt::format("unexpected tensor {} (the {} has no such tensor)", name, what));
    }
  }
  if (!problems.empty()) {
    std::string message = file + ": " + problems.front();
    if (problems.size() > 1) message += fmt::format(" (and {} more problems)", problems.size() - 1);
    throw CheckpointError(message);
  }
  for (const auto& [target, source] : copies) target->copy_(*source);
}

}  // namespace pb::checkpoint
